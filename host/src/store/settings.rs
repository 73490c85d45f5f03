//! Archive URLs and backend settings: which backend a URL names, the
//! environment and config-file options it reads, and the mistakes that are
//! refused before anything is touched.

use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreScheme};
use url::Url;

use super::local::LocalDir;
use super::Archive;
use crate::storage::StorageError;

fn bad(url: &str, why: impl Into<String>) -> StorageError {
    StorageError::BadUrl { url: url.to_owned(), why: why.into() }
}

/// URL schemes an archive argument is likely to have meant.
const KNOWN_SCHEMES: [&str; 11] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "adl", "file", "memory", "https"];

/// The archive URL for a `--to` or `--from` argument: a URL as given, or a
/// local path as a `file://` URL. A path whose first component ends in `:`
/// (`s3:/bucket`), or starts with an archive URL's scheme and `:`
/// (`gs:bucket/wal`), is refused as a mistyped URL, with the URL it
/// probably meant.
pub fn url_for(arg: &str) -> Result<String, StorageError> {
    // `file://archive` names a host, not a directory.
    if let Some(rest) = arg.strip_prefix("file://").filter(|r| !r.starts_with('/') && !r.starts_with("localhost/")) {
        return Err(bad(
            arg,
            format!("a file:// URL takes an absolute path (file:///{rest} for /{rest}); for a directory relative to here, give the path itself: ./{rest}"),
        ));
    }
    if arg.contains("://") {
        return Ok(arg.to_owned());
    }
    let first = arg.split('/').next().unwrap_or("");
    // `s3:/bucket`, and `s3:bucket` for the schemes archives use.
    let scheme = first.strip_suffix(':').or_else(|| {
        let (scheme, _) = first.split_once(':')?;
        KNOWN_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()).then_some(scheme)
    });
    if let Some(scheme) = scheme {
        let rest = arg[scheme.len() + 1..].trim_start_matches('/');
        let meant = if scheme == "file" { format!("file:///{rest}") } else { format!("{scheme}://{rest}") };
        return Err(bad(
            arg,
            format!("it looks like a URL with its `//` missing; did you mean {meant}? (for a local directory whose name ends in `:`, write ./{arg})"),
        ));
    }
    if arg.is_empty() {
        return Err(bad(arg, "it is empty"));
    }
    let path = std::path::absolute(arg).map_err(|e| bad(arg, e.to_string()))?;
    Url::from_file_path(&path).map(|u| u.to_string()).map_err(|()| bad(arg, "not a usable local path"))
}

/// Makes ring the process's TLS provider, once, before any HTTP client is
/// built: reqwest is built without a provider of its own (see
/// `host/Cargo.toml`) and would panic at the first client otherwise. A
/// provider another part of the process installed first is kept.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What opening a local archive does about its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Makes it if missing (archive).
    Create,
    /// It must be there (verify, restore, prune: a typo must not look like
    /// an empty archive).
    Existing,
    /// Missing, it reads as empty and is not made (status before the first
    /// run).
    MayBeAbsent,
}

/// Opens an archive at `url`; see [`Archive::open_with`].
pub fn open(url: &str, options: &[(String, String)], request_retries: usize, presence: Presence) -> Result<Archive, StorageError> {
    install_tls_provider();
    let parsed = Url::parse(url).map_err(|e| bad(url, e.to_string()))?;
    let url = parsed.as_str();
    let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(url, e.to_string()))?;
    let no_options = |what: &str| -> Result<(), StorageError> {
        match options.first() {
            Some((key, _)) => Err(bad(url, format!("option {key:?} does not apply to {what} archives"))),
            None => Ok(()),
        }
    };
    let mut probe = None;
    let mut put_limit = super::object::SINGLE_PUT_LIMIT;
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::Local => {
            no_options("local")?;
            let dir = parsed.to_file_path().map_err(|()| bad(url, "not an absolute local path"))?;
            if presence != Presence::Create {
                match std::fs::symlink_metadata(&dir) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(bad(url, format!("{} is not a directory (a symlink is not followed)", dir.display()))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && presence == Presence::MayBeAbsent => {
                        return Ok(Archive::local(LocalDir::absent(&dir), url));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(bad(url, format!("{} does not exist (nothing was archived there yet?)", dir.display())));
                    }
                    Err(e) => return Err(bad(url, format!("cannot use {}: {e}", dir.display()))),
                }
            }
            return Ok(Archive::local(LocalDir::open(&dir, presence == Presence::Create)?, url));
        }
        ObjectStoreScheme::Memory => {
            no_options("memory")?;
            Arc::new(object_store::memory::InMemory::new())
        }
        ObjectStoreScheme::AmazonS3 => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum, S3CopyIfNotExists};
            // Every PUT carries a CRC64NVME that S3 checks against the bytes
            // it received, so a segment can go in one create-only PUT; with a
            // checksum the store checks, the payload need not be signed too.
            let mut b = AmazonS3Builder::new()
                .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
                .with_checksum_algorithm(Checksum::CRC64NVME)
                .with_unsigned_payload(true);
            let settings = cloud_settings("AWS_", options);
            for (key, value) in &settings {
                let parsed_key: AmazonS3ConfigKey = key.parse().map_err(|_| unknown_key(url, key))?;
                b = b.with_config(parsed_key, value);
            }
            check_aws_credentials(url, &settings)?;
            // Whether the store checks that checksum is asked of it once,
            // through a wrapper around the HTTP client; see store::probe.
            if b.get_config_value(&AmazonS3ConfigKey::Checksum).is_some_and(|c| !c.is_empty()) {
                let slot = Arc::new(super::probe::ProbeSlot::default());
                b = b.with_http_connector(super::probe::ProbingConnector { slot: slot.clone() });
                probe = Some(slot);
            }
            Arc::new(b.with_url(url).with_retry(retry_config(request_retries)).build().map_err(|e| bad(url, super::describe(&e)))?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut b = GoogleCloudStorageBuilder::new();
            for (key, value) in cloud_settings("GOOGLE_", options) {
                let parsed_key: GoogleConfigKey = key.parse().map_err(|_| unknown_key(url, &key))?;
                b = b.with_config(parsed_key, value);
            }
            // Every PUT of a whole object carries its CRC32C, which GCS
            // checks; whether the store checks is asked once (store::gcs).
            let slot = Arc::new(super::probe::ProbeSlot::default());
            b = b.with_http_connector(super::gcs::GcsConnector { slot: slot.clone() });
            probe = Some(slot);
            Arc::new(b.with_url(url).with_retry(retry_config(request_retries)).build().map_err(|e| bad(url, super::describe(&e)))?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let mut b = MicrosoftAzureBuilder::new();
            for (key, value) in cloud_settings("AZURE_", options) {
                let parsed_key: AzureConfigKey = key.parse().map_err(|_| unknown_key(url, &key))?;
                b = b.with_config(parsed_key, value);
            }
            // Every Put Blob carries its Content-MD5, which Azure checks
            // against the bytes it received; whether the store checks is
            // asked once, as of S3 (store::azure, store::probe).
            let use_emulator = b.get_config_value(&AzureConfigKey::UseEmulator).is_some_and(|v| super::azure::truthy(&v));
            let key = super::azure::SharedKey::from_settings(b.get_config_value(&AzureConfigKey::AccessKey), use_emulator);
            let slot = Arc::new(super::probe::ProbeSlot::default());
            b = b.with_http_connector(super::azure::AzureConnector { slot: slot.clone(), key });
            probe = Some(slot);
            put_limit = super::object::AZURE_PUT_LIMIT;
            Arc::new(b.with_url(url).with_retry(retry_config(request_retries)).build().map_err(|e| bad(url, super::describe(&e)))?)
        }
        other => {
            return Err(bad(
                url,
                format!("the {other:?} scheme is not an archive backend; use a local path, file://, s3://, gs://, az:// or memory://"),
            ));
        }
    };
    Ok(Archive::with_store(store, path.as_ref(), url, probe).with_put_limit(put_limit))
}

/// Whether `key` is an option of the backend that `url` names. Local
/// and memory archives take no options.
pub fn option_is_known(url: &str, key: &str) -> Result<bool, StorageError> {
    use object_store::{aws::AmazonS3ConfigKey, azure::AzureConfigKey, gcp::GoogleConfigKey};
    let parsed = Url::parse(url).map_err(|e| bad(url, e.to_string()))?;
    let (scheme, _) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(url, e.to_string()))?;
    Ok(match scheme {
        ObjectStoreScheme::AmazonS3 => key.parse::<AmazonS3ConfigKey>().is_ok(),
        ObjectStoreScheme::GoogleCloudStorage => key.parse::<GoogleConfigKey>().is_ok(),
        ObjectStoreScheme::MicrosoftAzure => key.parse::<AzureConfigKey>().is_ok(),
        _ => false,
    })
}

/// The environment's settings for one backend (`AWS_…` lowercased, as the
/// builders' `from_env` reads them), then the config file's options. The
/// environment is shared with other tools: keys this backend does not know
/// are left alone there, while the config file's are checked.
fn cloud_settings(env_prefix: &str, options: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Names and values that are not Unicode are no setting object_store reads.
    let vars = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    for (name, value) in vars.filter(|(k, _)| k.starts_with(env_prefix)) {
        let key = name.to_ascii_lowercase();
        if known_env_key(env_prefix, &key) {
            out.push((key, value));
        } else {
            // A setting that looks like one but is not is ignored by the
            // store, silently: say so, or a mistyped name costs an hour.
            tracing::warn!(variable = %name, "{}", unread_variable(env_prefix, &name));
        }
    }
    out.extend(options.iter().cloned());
    out
}

/// Settings each backend reads from the environment, as the names to
/// suggest for a mistyped one (object_store reads a few more aliases).
const AWS_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_BUCKET",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "AWS_S3_EXPRESS",
    "AWS_IMDSV1_FALLBACK", "AWS_METADATA_ENDPOINT", "AWS_UNSIGNED_PAYLOAD", "AWS_CHECKSUM_ALGORITHM",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_ENDPOINT_URL_STS", "AWS_SKIP_SIGNATURE",
    "AWS_COPY_IF_NOT_EXISTS", "AWS_CONDITIONAL_PUT", "AWS_DISABLE_TAGGING", "AWS_REQUEST_PAYER", "AWS_ALLOW_HTTP",
    "AWS_SERVER_SIDE_ENCRYPTION", "AWS_SSE_KMS_KEY_ID", "AWS_SSE_BUCKET_KEY_ENABLED", "AWS_SSE_CUSTOMER_KEY_BASE64",
    "AWS_ALLOW_INVALID_CERTIFICATES", "AWS_PROXY_URL", "AWS_PROXY_CA_CERTIFICATE", "AWS_CONNECT_TIMEOUT", "AWS_TIMEOUT",
];
const GOOGLE_VARIABLES: &[&str] = &[
    "GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_BUCKET", "GOOGLE_BUCKET_NAME",
    "GOOGLE_BASE_URL", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_BEARER_TOKEN", "GOOGLE_SKIP_SIGNATURE",
];
const AZURE_VARIABLES: &[&str] = &[
    "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_CLIENT_ID",
    "AZURE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_TENANT_ID", "AZURE_TENANT_ID",
    "AZURE_STORAGE_AUTHORITY_HOST", "AZURE_AUTHORITY_HOST", "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN", "AZURE_STORAGE_USE_EMULATOR", "AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT", "AZURE_MSI_ENDPOINT",
    "AZURE_OBJECT_ID", "AZURE_MSI_RESOURCE_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USE_FABRIC_ENDPOINT", "AZURE_USE_AZURE_CLI",
    "AZURE_SKIP_SIGNATURE", "AZURE_CONTAINER_NAME", "AZURE_DISABLE_TAGGING", "AZURE_CREDENTIAL_TYPE",
    "AZURE_STORAGE_ENCRYPTION_KEY", "AZURE_ALLOW_HTTP", "AZURE_ALLOW_INVALID_CERTIFICATES", "AZURE_PROXY_URL",
];

/// The warning for an environment variable of the backend in use that the
/// backend does not read, with the nearest name it does read.
fn unread_variable(env_prefix: &str, name: &str) -> String {
    let known = match env_prefix {
        "AWS_" => AWS_VARIABLES,
        "GOOGLE_" => GOOGLE_VARIABLES,
        _ => AZURE_VARIABLES,
    };
    // Settings of other AWS tools that users expect to work here.
    let explained = match name {
        "AWS_PROFILE" | "AWS_DEFAULT_PROFILE" | "AWS_CONFIG_FILE" | "AWS_SHARED_CREDENTIALS_FILE" => {
            Some("profiles and ~/.aws are not read; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a web identity")
        }
        "AWS_CA_BUNDLE" => Some(
            "the store's certificates are checked against the system's trust store \
             (AWS_PROXY_CA_CERTIFICATE, the nearest setting it reads, is for a proxy's)",
        ),
        // The Azure CLI's names, which the nearest-word rule would steer
        // to the wrong setting (a SAS key for an account key).
        "AZURE_STORAGE_ACCOUNT" => Some("did you mean AZURE_STORAGE_ACCOUNT_NAME?"),
        "AZURE_STORAGE_KEY" => Some("did you mean AZURE_STORAGE_ACCOUNT_KEY?"),
        _ => None,
    };
    if let Some(why) = explained {
        let sep = if why.starts_with("did you mean") { ";" } else { ":" };
        return format!("environment variable {name} is not a setting the archive's store reads, and is ignored{sep} {why}");
    }
    let (near, close) = nearest(name, known);
    if close {
        format!("environment variable {name} is not a setting the archive's store reads, and is ignored; did you mean {near}?")
    } else {
        format!(
            "environment variable {name} is not a setting the archive's store reads, and is ignored \
             (no setting is close; the nearest is {near}; see the README's backend table)"
        )
    }
}

/// The known name closest to `name`: the most words in common beyond the
/// prefix (`AZURE_USE_EMULATOR` is `AZURE_STORAGE_USE_EMULATOR`), then the
/// fewest edits; and whether it is close: it holds most of `name`'s words
/// or is within three edits. A name that is not close is no more than the
/// nearest, and is not offered as what was meant (`AWS_DEFAULT_OUTPUT` is
/// not `AWS_DEFAULT_REGION`).
fn nearest<'a>(name: &str, known: &[&'a str]) -> (&'a str, bool) {
    let words: Vec<&str> = name.split('_').skip(1).filter(|w| !w.is_empty()).collect();
    known
        .iter()
        .map(|k| {
            let shared = k.split('_').skip(1).filter(|w| words.contains(w)).count();
            (shared, edits(name, k), *k)
        })
        .min_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)))
        .map(|(shared, edits, k)| (k, 2 * shared > words.len() || edits <= 3))
        .expect("every backend has settings")
}

/// Levenshtein distance, bytewise (the names are ASCII).
fn edits(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn known_env_key(env_prefix: &str, key: &str) -> bool {
    use object_store::{aws::AmazonS3ConfigKey, azure::AzureConfigKey, gcp::GoogleConfigKey};
    match env_prefix {
        "AWS_" => key.parse::<AmazonS3ConfigKey>().is_ok(),
        "GOOGLE_" => key.parse::<GoogleConfigKey>().is_ok(),
        _ => key.parse::<AzureConfigKey>().is_ok(),
    }
}

fn unknown_key(url: &str, key: &str) -> StorageError {
    bad(url, format!("unknown storage option {key:?}"))
}

/// Fails fast when S3 has no credentials to use. Without keys, a web
/// identity, container credentials or unsigned requests, object_store asks
/// the EC2 instance metadata service, which off EC2 costs seconds of
/// retries before a bare "403 Forbidden". Here that service gets one
/// second to hand out a token.
fn check_aws_credentials(url: &str, settings: &[(String, String)]) -> Result<(), StorageError> {
    let has = |k: &str| settings.iter().any(|(key, v)| key == k && !v.is_empty());
    let truthy = |k: &str| settings.iter().any(|(key, v)| key == k && matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    if has("aws_access_key_id")
        || has("aws_secret_access_key")
        || has("access_key_id")
        || has("secret_access_key")
        || (has("aws_web_identity_token_file") && has("aws_role_arn"))
        || has("aws_container_credentials_relative_uri")
        || has("aws_container_credentials_full_uri")
        || truthy("aws_skip_signature")
        || truthy("skip_signature")
    {
        return Ok(());
    }
    let endpoint =
        settings.iter().find(|(k, _)| k == "aws_metadata_endpoint" || k == "metadata_endpoint").map_or("http://169.254.169.254", |(_, v)| v.as_str());
    if imds_answers(endpoint) {
        return Ok(());
    }
    Err(bad(
        url,
        format!(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or aws_access_key_id and \
             aws_secret_access_key under [storage] in the config file), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN; \
             AWS_PROFILE and ~/.aws are not read, and no instance metadata endpoint answered at {endpoint}"
        ),
    ))
}

/// True when an EC2 instance metadata service at `endpoint` hands out a
/// session token (IMDSv2, which object_store uses), within a second. A
/// network that accepts the connection and refuses the request (a proxy,
/// a sandbox) is no metadata service.
fn imds_answers(endpoint: &str) -> bool {
    use std::io::{Read, Write};
    let Some(url) = Url::parse(endpoint).ok() else {
        return false;
    };
    let host = url.host_str().unwrap_or("").to_owned();
    let Some(addrs) = url.socket_addrs(|| Some(80)).ok() else {
        return false;
    };
    addrs.iter().any(|addr| {
        let Ok(mut conn) = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(1)) else { return false };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
        let request = format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: {host}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut status = [0u8; 12];
        conn.write_all(request.as_bytes()).is_ok()
            && conn.read_exact(&mut status).is_ok()
            && status.starts_with(b"HTTP/1.")
            && &status[9..12] == b"200"
    })
}

/// object_store's own retries for one request: few and quick, because the
/// archiver retries whole segments itself, with backoff, and counts them.
fn retry_config(max_retries: usize) -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2), base: 2.0 },
        max_retries,
        retry_timeout: Duration::from_secs(30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_names_the_store_reads() {
        for (prefix, names) in [("AWS_", AWS_VARIABLES), ("GOOGLE_", GOOGLE_VARIABLES), ("AZURE_", AZURE_VARIABLES)] {
            for name in names {
                assert!(known_env_key(prefix, &name.to_ascii_lowercase()), "{name} is suggested but not read");
            }
        }
    }

    #[test]
    fn names_the_nearest_setting_for_an_unread_variable() {
        for (prefix, name, near) in [
            ("AZURE_", "AZURE_USE_EMULATOR", Some("AZURE_STORAGE_USE_EMULATOR")),
            ("AZURE_", "AZURE_ACCOUNT_NAME", Some("AZURE_STORAGE_ACCOUNT_NAME")),
            ("AWS_", "AWS_SECRET_KEY", Some("AWS_SECRET_ACCESS_KEY")),
            ("AWS_", "AWS_ACCESS_KEY", Some("AWS_ACCESS_KEY_ID")),
            ("AWS_", "AWS_REGON", Some("AWS_REGION")),
            ("AWS_", "AWS_ENDPOIN_URL", Some("AWS_ENDPOINT_URL")),
            ("GOOGLE_", "GOOGLE_CREDENTIALS", Some("GOOGLE_APPLICATION_CREDENTIALS")),
            ("AWS_", "AWS_PROFILE", None),
            ("AWS_", "AWS_CA_BUNDLE", None),
            ("AWS_", "AWS_DEFAULT_OUTPUT", None),
            ("GOOGLE_", "GOOGLE_CLOUD_PROJECT", None),
            ("AZURE_", "AZURE_STORAGE_ACCOUNT", Some("AZURE_STORAGE_ACCOUNT_NAME")),
            ("AZURE_", "AZURE_STORAGE_KEY", Some("AZURE_STORAGE_ACCOUNT_KEY")),
        ] {
            assert!(!known_env_key(prefix, &name.to_ascii_lowercase()), "{name} is read after all");
            let text = unread_variable(prefix, name);
            let known = match prefix {
                "AWS_" => AWS_VARIABLES,
                "GOOGLE_" => GOOGLE_VARIABLES,
                _ => AZURE_VARIABLES,
            };
            assert!(text.starts_with(&format!("environment variable {name} is not a setting")), "{text}");
            match near {
                Some(near) => assert!(text.ends_with(&format!("did you mean {near}?")), "{name}: {text}"),
                None => assert!(!text.contains("did you mean"), "{name}: {text}"),
            }
            // Every warning names a setting that is read.
            assert!(known.iter().any(|k| text.contains(k)), "{name}: {text}");
        }
    }

    #[test]
    fn refuses_a_path_that_looks_like_a_url_with_a_slash_missing() {
        for (arg, meant) in [
            ("s3:/bucket", "s3://bucket"),
            ("s3:bucket/wal", "s3://bucket/wal"),
            ("gs:/b/p", "gs://b/p"),
            ("az:c", "az://c"),
            ("file:/tmp/a", "file:///tmp/a"),
        ] {
            let err = url_for(arg).unwrap_err().to_string();
            assert!(err.contains(&format!("did you mean {meant}?")), "{arg}: {err}");
        }
        assert!(url_for("./s3:").is_ok());
        assert!(url_for("archive").unwrap().starts_with("file:///"));
        assert!(url_for("").is_err());
        assert_eq!(url_for("s3://b/p").unwrap(), "s3://b/p");
    }

    #[test]
    fn refuses_s3_without_credentials_quickly() {
        let started = std::time::Instant::now();
        let settings = vec![("aws_metadata_endpoint".to_owned(), "http://127.0.0.1:9".to_owned())];
        let err = check_aws_credentials("s3://b", &settings).unwrap_err().to_string();
        assert!(err.contains("no AWS credentials found") && err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let keys = vec![("aws_access_key_id".to_owned(), "k".to_owned()), ("aws_secret_access_key".to_owned(), "s".to_owned())];
        assert!(check_aws_credentials("s3://b", &keys).is_ok());
    }
}
