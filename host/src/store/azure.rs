//! Azure: a segment in one Put Blob that the store itself checks.
//!
//! object_store 0.14 sends Azure no checksum of a blob's body. Azure checks
//! a `Content-MD5` sent with Put Blob against the bytes it received, refuses
//! the write on a mismatch (400 `Md5Mismatch`), and keeps the MD5 as the
//! blob's. The HTTP client under object_store (a wrapper of ours around the
//! probe's, see [`super::probe`]) adds it to every Put Blob. A request
//! signed with the account key (Shared Key) is signed again, because that
//! signature covers `Content-MD5`; SAS and bearer tokens do not sign it.
//!
//! Whether the store checks is asked once per process by the probe, as for
//! S3: the probe's body is corrupted after its MD5 is taken. A request that
//! cannot be signed again (a Shared Key request without the key at hand)
//! goes out without an MD5, and the probe then finds the store not checking:
//! segments are staged and read back.

use std::sync::Arc;

use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use md5::{Digest, Md5};
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService};
use object_store::{ClientOptions, PutPayload};

use super::probe::{ProbeSlot, ProbingConnector};

/// The account key Azurite and the Azure storage emulator accept, as
/// Microsoft publishes it; object_store signs with it for `use_emulator`.
const EMULATOR_ACCOUNT_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

static CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");

/// An account key, for signing a request again.
#[derive(Clone)]
pub struct SharedKey {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("SharedKey").finish_non_exhaustive()
    }
}

/// A setting object_store reads as true (its own list).
pub fn truthy(value: &str) -> bool {
    ["1", "true", "on", "yes", "y"].contains(&value.to_ascii_lowercase().as_str())
}

impl SharedKey {
    /// The key object_store signs with, from the builder's settings: the
    /// account key given, else the emulator's for `use_emulator`. None when
    /// there is none or it is not base64 (object_store then signs otherwise,
    /// or refuses the settings itself). The account is the one the request
    /// was signed for (the URL's or the settings'), read from its header.
    pub fn from_settings(access_key: Option<String>, use_emulator: bool) -> Option<Self> {
        let key = match access_key {
            Some(k) => k,
            None if use_emulator => EMULATOR_ACCOUNT_KEY.to_owned(),
            None => return None,
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(key.trim()).ok()?;
        Some(Self { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes) })
    }

    /// The `Authorization` value of a Shared Key request of `account` with
    /// these headers (Azure's "Authorize with Shared Key": the verb, twelve
    /// standard headers, the `x-ms-` headers sorted, the account and path,
    /// and the query's parameters sorted).
    fn authorization(&self, account: &str, method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> Option<String> {
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        // Content-Length is left empty when it is 0 (service version 2015-02-21 on).
        let length = Some(value("content-length")).filter(|v| *v != "0").unwrap_or("");
        let mut text = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            method.as_str(),
            value("content-encoding"),
            value("content-language"),
            length,
            value("content-md5"),
            value("content-type"),
            value("date"),
            value("if-modified-since"),
            value("if-match"),
            value("if-none-match"),
            value("if-unmodified-since"),
            value("range"),
        );
        let mut ms: Vec<(&str, &str)> = Vec::new();
        for (name, v) in headers {
            if name.as_str().starts_with("x-ms-") {
                ms.push((name.as_str(), v.to_str().ok()?));
            }
        }
        ms.sort_unstable();
        for (name, v) in ms {
            text.push_str(name);
            text.push(':');
            text.push_str(v);
            text.push('\n');
        }
        text.push('/');
        text.push_str(account);
        text.push_str(uri.path());
        let url = url::Url::parse(&uri.to_string()).ok()?;
        let mut params: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in url.query_pairs() {
            let k = k.to_lowercase();
            match params.iter_mut().find(|(name, _)| *name == k) {
                Some((_, values)) => values.push(v.into_owned()),
                None => params.push((k, vec![v.into_owned()])),
            }
        }
        params.sort();
        for (k, mut values) in params {
            values.sort();
            text.push('\n');
            text.push_str(&k);
            text.push(':');
            text.push_str(&values.join(","));
        }
        let tag = ring::hmac::sign(&self.key, text.as_bytes());
        Some(format!("SharedKey {account}:{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref())))
    }
}

/// Makes object_store's HTTP clients for Azure: the probe's client, wrapped
/// to give every Put Blob its `Content-MD5`.
#[derive(Debug)]
pub struct AzureConnector {
    pub slot: Arc<ProbeSlot>,
    pub key: Option<SharedKey>,
}

impl HttpConnector for AzureConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ProbingConnector { slot: self.slot.clone() }.connect(options)?;
        Ok(HttpClient::new(Md5Blobs { inner, key: self.key.clone(), warned: Default::default() }))
    }
}

#[derive(Debug)]
struct Md5Blobs {
    inner: HttpClient,
    key: Option<SharedKey>,
    /// Said once that Put Blobs go without an MD5.
    warned: std::sync::atomic::AtomicBool,
}

/// The account of a Shared Key `Authorization` value: `SharedKey {account}:{signature}`.
fn shared_key_account(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok()?.strip_prefix("SharedKey ")?.split_once(':').map(|(account, _)| account).filter(|a| !a.is_empty())
}

/// A Put Blob with a body: not a block or a block list (`comp=`), not a
/// copy from another blob.
fn is_put_blob(req: &HttpRequest) -> bool {
    req.method() == http::Method::PUT
        && req.headers().get("x-ms-blob-type").is_some_and(|v| v == "BlockBlob")
        && !req.headers().contains_key("x-ms-copy-source")
        && !req.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("comp=")))
}

#[async_trait::async_trait]
impl HttpService for Md5Blobs {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !is_put_blob(&req) {
            return self.inner.execute(req).await;
        }
        let signed_with_key = req.headers().get(AUTHORIZATION).map(|v| (v.as_bytes().starts_with(b"SharedKey "), shared_key_account(v)));
        let resign = match (signed_with_key, &self.key) {
            (Some((true, Some(account))), Some(key)) => Some((account.to_owned(), key.clone())),
            (Some((true, _)), _) => {
                // It cannot be signed again: it goes as it is, unchecked, and
                // the probe finds the store not checking.
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!("Put Blobs go without a Content-MD5: they are signed with an account key that is not at hand to sign them again");
                }
                return self.inner.execute(req).await;
            }
            _ => None,
        };
        let (mut parts, body) = req.into_parts();
        let chunks = super::probe::body_chunks(body).await?;
        // MD5 runs at about half a gigabyte a second: off the async workers.
        let (chunks, digest) = tokio::task::spawn_blocking(move || {
            let mut md5 = Md5::new();
            for c in &chunks {
                md5.update(c);
            }
            let digest = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
            (chunks, digest)
        })
        .await
        .map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        parts.headers.insert(CONTENT_MD5.clone(), HeaderValue::from_str(&digest).expect("base64 is a header value"));
        if let Some((account, key)) = resign {
            // Not retried: the same request cannot be signed the next time either.
            let signature = key
                .authorization(&account, &parts.method, &parts.uri, &parts.headers)
                .and_then(|s| HeaderValue::from_str(&s).ok())
                .ok_or_else(|| HttpError::new(HttpErrorKind::Unknown, SignError(parts.uri.to_string())))?;
            parts.headers.insert(AUTHORIZATION, signature);
        }
        let body = PutPayload::from_iter(chunks);
        self.inner.execute(HttpRequest::from_parts(parts, body.into())).await
    }
}

/// A request whose headers or URL cannot be put into a Shared Key signature.
#[derive(Debug)]
struct SignError(String);

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot sign the Put Blob of {} with the account key: a header is not text", self.0)
    }
}

impl std::error::Error for SignError {}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use crate::store::echo::request;

    fn key() -> SharedKey {
        SharedKey::from_settings(None, true).unwrap()
    }

    #[test]
    fn adds_an_md5_only_to_a_put_blob_with_a_body() {
        let blob = "http://127.0.0.1:10000/devstoreaccount1/c/wal/wal-0000000000000001-0000000000000010.seg";
        assert!(is_put_blob(&request(http::Method::PUT, blob, &[("x-ms-blob-type", "BlockBlob")])));
        // A block, a block list, a copy, a read, a container: left alone.
        assert!(!is_put_blob(&request(http::Method::PUT, &format!("{blob}?comp=block&blockid=AA"), &[("x-ms-blob-type", "BlockBlob")])));
        assert!(!is_put_blob(&request(http::Method::PUT, &format!("{blob}?comp=blocklist"), &[])));
        assert!(!is_put_blob(&request(http::Method::PUT, blob, &[("x-ms-blob-type", "BlockBlob"), ("x-ms-copy-source", "http://x/y")])));
        assert!(!is_put_blob(&request(http::Method::GET, blob, &[])));
        assert!(!is_put_blob(&request(http::Method::PUT, "http://127.0.0.1:10000/devstoreaccount1/c?restype=container", &[])));
    }

    /// The signature of a request made by hand from Azure's description of
    /// Shared Key: the string signed is the one the service builds.
    #[test]
    fn signs_what_azure_signs() {
        let key = key();
        let uri: http::Uri = "http://127.0.0.1:10000/devstoreaccount1/c/a%20b.seg?timeout=30&COMP=x&comp=a".parse().unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("content-length", "7"),
            ("content-md5", "ZGlnZXN0"),
            ("if-none-match", "*"),
            ("date", "Thu, 26 Nov 2026 23:00:00 GMT"),
            ("x-ms-version", "2023-11-03"),
            ("x-ms-blob-type", "BlockBlob"),
            ("user-agent", "not signed"),
        ] {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let expected_text = "PUT\n\n\n7\nZGlnZXN0\n\nThu, 26 Nov 2026 23:00:00 GMT\n\n\n*\n\n\n\
             x-ms-blob-type:BlockBlob\nx-ms-version:2023-11-03\n\
             /devstoreaccount1/devstoreaccount1/c/a%20b.seg\ncomp:a,x\ntimeout:30";
        let tag = ring::hmac::sign(&key.key, expected_text.as_bytes());
        let expected = format!("SharedKey devstoreaccount1:{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
        assert_eq!(key.authorization("devstoreaccount1", &http::Method::PUT, &uri, &headers).unwrap(), expected);
        // A changed MD5 is another signature.
        headers.insert(CONTENT_MD5.clone(), HeaderValue::from_static("b3RoZXI="));
        assert_ne!(key.authorization("devstoreaccount1", &http::Method::PUT, &uri, &headers).unwrap(), expected);
    }

    /// A Put Blob signed with the key leaves with the body's MD5 and a
    /// signature over it; one with another credential (no Authorization
    /// header: a SAS in the URL) with the MD5 alone; one signed with a key
    /// that is not at hand as it came.
    #[tokio::test]
    async fn sends_the_md5_of_the_body_it_sends_signed_again_where_the_key_signed() {
        let blob = "http://127.0.0.1:10000/devstoreaccount1/c/wal-0000000000000001-0000000000000010.seg";
        let put = |auth: Option<&str>| {
            let mut b = http::Request::builder()
                .method(http::Method::PUT)
                .uri(blob)
                .header("x-ms-blob-type", "BlockBlob")
                .header("x-ms-version", "2023-11-03")
                .header("content-length", "11");
            if let Some(a) = auth {
                b = b.header(AUTHORIZATION, a);
            }
            b.body(PutPayload::from_iter([Bytes::from_static(b"hello "), Bytes::from_static(b"world")]).into()).unwrap()
        };
        // MD5 of "hello world", in base64.
        let md5 = "XrY7u+Ae7tCTyyK7j1rNww==";
        let echo = crate::store::echo::Echo::default();

        let signed = Md5Blobs { inner: echo.client(), key: Some(key()), warned: Default::default() };
        // Signed for the account the request names (object_store takes it
        // from the URL before the settings).
        signed.call(put(Some("SharedKey otheraccount:old"))).await.unwrap();
        let sent = echo.last();
        assert_eq!((sent.headers.get(&CONTENT_MD5).unwrap().to_str().unwrap(), sent.body.as_slice()), (md5, b"hello world".as_slice()));
        let again = key().authorization("otheraccount", &http::Method::PUT, &blob.parse().unwrap(), &sent.headers).unwrap();
        assert!(again.starts_with("SharedKey otheraccount:"), "{again}");
        assert_eq!(sent.headers.get(AUTHORIZATION).unwrap().to_str().unwrap(), again);

        signed.call(put(None)).await.unwrap();
        let sent = echo.last();
        assert_eq!(sent.headers.get(&CONTENT_MD5).unwrap().to_str().unwrap(), md5);
        assert!(sent.headers.get(AUTHORIZATION).is_none());

        let keyless = Md5Blobs { inner: echo.client(), key: None, warned: Default::default() };
        keyless.call(put(Some("SharedKey devstoreaccount1:old"))).await.unwrap();
        let sent = echo.last();
        assert!(sent.headers.get(&CONTENT_MD5).is_none());
        assert_eq!(sent.headers.get(AUTHORIZATION).unwrap(), "SharedKey devstoreaccount1:old");
        assert_eq!(sent.body, b"hello world");
    }

    #[test]
    fn takes_the_key_given_else_the_emulators_and_refuses_one_that_is_not_base64() {
        let sign = |k: &SharedKey| k.authorization("a", &http::Method::PUT, &"http://h/a/c/b".parse().unwrap(), &HeaderMap::new()).unwrap();
        let given = SharedKey::from_settings(Some("c2VjcmV0".into()), true).unwrap();
        assert_ne!(sign(&given), sign(&key()), "the key given, not the emulator's");
        assert_eq!(sign(&SharedKey::from_settings(Some(EMULATOR_ACCOUNT_KEY.into()), false).unwrap()), sign(&key()));
        assert!(SharedKey::from_settings(None, false).is_none());
        assert!(SharedKey::from_settings(Some("not base64!".into()), false).is_none());
        assert!(!format!("{:?}", key()).contains(EMULATOR_ACCOUNT_KEY));
        for (v, yes) in [("y", true), ("YES", true), ("1", true), ("on", true), ("true", true), ("n", false), ("0", false), ("", false)] {
            assert_eq!(truthy(v), yes, "{v}");
        }
        let header = HeaderValue::from_static("SharedKey acct:c2ln");
        assert_eq!(shared_key_account(&header), Some("acct"));
        assert_eq!(shared_key_account(&HeaderValue::from_static("Bearer x")), None);
        assert_eq!(shared_key_account(&HeaderValue::from_static("SharedKey :sig")), None);
    }
}
