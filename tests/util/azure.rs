//! Azurite, the Azure Blob Storage emulator, for the tests on 127.0.0.1.
//!
//! `.ci/run` starts one and names it in `WAL_ARCHIVER_TEST_AZURE_ENDPOINT`
//! (`http://127.0.0.1:PORT`) and `WAL_ARCHIVER_TEST_AZURE_CONTAINER`.
//! Without those, the harness starts its own `azurite-blob` from
//! `examples/js/node_modules` (installed by `npm ci` there) on a free port;
//! it dies with the test process. Either way the container is made here:
//! object_store does not create containers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;

use super::s3::{free_port, spawn_server};

/// Azurite's account and key: the emulator's published development
/// credentials, the same in every installation.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug)]
pub struct Azure {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub container: String,
}

impl Azure {
    /// The emulator every test shares; each test works under a prefix of its own.
    pub fn get() -> &'static Azure {
        static SERVER: OnceLock<Azure> = OnceLock::new();
        SERVER.get_or_init(|| {
            let container = std::env::var("WAL_ARCHIVER_TEST_AZURE_CONTAINER").unwrap_or_else(|_| "wal-archiver-test".to_owned());
            let endpoint = match std::env::var("WAL_ARCHIVER_TEST_AZURE_ENDPOINT") {
                Ok(endpoint) => endpoint,
                Err(_) => start_azurite(),
            };
            create_container(&endpoint, &container);
            Azure { endpoint, container }
        })
    }

    /// A URL under a prefix unique to `test`.
    pub fn url(&self, test: &str) -> String {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("az://{}/{test}-{}-{n}", self.container, std::process::id())
    }

    /// The options that point object_store at this emulator, as a config file would.
    pub fn options(&self) -> Vec<(String, String)> {
        self.options_via(&self.endpoint)
    }

    /// The same options, but reaching the emulator through `endpoint` (a proxy).
    /// Azurite takes the account as the first part of the path.
    pub fn options_via(&self, endpoint: &str) -> Vec<(String, String)> {
        let account_url = format!("{endpoint}/{ACCOUNT}");
        [("azure_storage_account_name", ACCOUNT), ("azure_storage_account_key", KEY), ("azure_storage_endpoint", &account_url), ("azure_allow_http", "true")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The standard environment variables a user would set for this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.to_owned()),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY.to_owned()),
            ("AZURE_STORAGE_ENDPOINT", format!("{}/{ACCOUNT}", self.endpoint)),
            ("AZURE_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// The same with a shared access signature (an account SAS for the
    /// Blob service, valid until 2099) in place of the account key: a
    /// credential that signs no header.
    pub fn sas_env(&self) -> Vec<(&'static str, String)> {
        let (version, expiry) = ("2021-08-06", "2099-01-01T00:00:00Z");
        // Account SAS, service version 2020-12-06 on: account, permissions,
        // services, resource types, start, expiry, IP range, protocol,
        // version and encryption scope, each followed by a newline.
        let to_sign = format!("{ACCOUNT}\nrwdlac\nb\nsco\n\n{expiry}\n\n\n{version}\n\n");
        let signature = hmac_sha256_base64(KEY, &to_sign);
        let sig: String = url::form_urlencoded::byte_serialize(signature.as_bytes()).collect();
        let token = format!("sv={version}&ss=b&srt=sco&sp=rwdlac&se={expiry}&sig={sig}");
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.to_owned()),
            ("AZURE_STORAGE_SAS_KEY", token),
            ("AZURE_STORAGE_ENDPOINT", format!("{}/{ACCOUNT}", self.endpoint)),
            ("AZURE_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

fn start_azurite() -> String {
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/js/node_modules/.bin/azurite-blob");
    let port = free_port();
    let mut cmd = Command::new(bin);
    // In memory: nothing is left behind when it dies with the tests.
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--loose", "--skipApiVersionCheck", "--silent", "--inMemoryPersistence"]);
    spawn_server(cmd, port, "azurite-blob", "(cd examples/js && npm ci)")
}

/// `PUT /{account}/{container}?restype=container`, signed with the
/// account's shared key as the Blob service requires. An existing container
/// (409) is fine: the CI's, or another test binary's.
fn create_container(endpoint: &str, container: &str) {
    let addr = endpoint.trim_start_matches("http://");
    let date = httpdate_now();
    let version = "2021-08-06";
    let path = format!("/{ACCOUNT}/{container}");
    // The string to sign of a Shared Key request: the verb, eleven standard
    // headers (all empty here; a zero Content-Length is written empty),
    // the x-ms- headers in order, then the resource and its query.
    let to_sign = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}{path}\nrestype:container");
    let signature = hmac_sha256_base64(KEY, &to_sign);
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT {path}?restype=container HTTP/1.1\r\nHost: {addr}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\n\
         Authorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 201") || reply.starts_with("HTTP/1.1 409"), "cannot create container {container} on {endpoint}: {reply}");
}

fn hmac_sha256_base64(key_b64: &str, text: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &engine.decode(key_b64).unwrap());
    engine.encode(ring::hmac::sign(&key, text.as_bytes()).as_ref())
}

/// The current time as an HTTP date (RFC 7231), which `x-ms-date` takes.
fn httpdate_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][(month - 1) as usize];
    format!("{weekday}, {day:02} {name} {year} {:02}:{:02}:{:02} GMT", rem / 3600, rem % 3600 / 60, rem % 60)
}
