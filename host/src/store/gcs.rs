//! GCS: a segment in one PUT that the store itself checks.
//!
//! object_store 0.14 writes to GCS through its XML API and sends no
//! checksum of the body. GCS checks an `x-goog-hash: crc32c=...` sent with
//! a PUT against the bytes it received and refuses the write on a mismatch
//! (400 `BadDigest` or `CrcMismatch`). The HTTP client under object_store (a
//! wrapper of ours around the probe's, see [`super::probe`]) adds it to
//! every PUT of a whole object. Requests to GCS carry a bearer token, which
//! signs no header, so nothing is signed again.
//!
//! Whether the store checks is asked once per process by the probe, as for
//! S3 and Azure; a store that stores the corrupted probe (or answers
//! otherwise) gets the staged way with its read-back.

use std::sync::Arc;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService};
use object_store::{ClientOptions, PutPayload};

use super::probe::{ProbeSlot, ProbingConnector};

static GOOG_HASH: HeaderName = HeaderName::from_static("x-goog-hash");

/// Makes object_store's HTTP clients for GCS: the probe's client, wrapped
/// to give every PUT of a whole object its CRC32C.
#[derive(Debug)]
pub struct GcsConnector {
    pub slot: Arc<ProbeSlot>,
}

impl HttpConnector for GcsConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ProbingConnector { slot: self.slot.clone() }.connect(options)?;
        Ok(HttpClient::new(Crc32cPuts { inner }))
    }
}

#[derive(Debug)]
struct Crc32cPuts {
    inner: HttpClient,
}

/// A PUT of a whole object: not a part of a multipart upload (a query
/// names it), not a copy (`x-goog-copy-source`).
fn is_put_object(req: &HttpRequest) -> bool {
    req.method() == http::Method::PUT && req.uri().query().is_none_or(str::is_empty) && !req.headers().contains_key("x-goog-copy-source")
}

/// The header value GCS reads: the CRC32C's four bytes, big-endian, in base64.
fn crc32c_hash(crc: u32) -> String {
    format!("crc32c={}", base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes()))
}

#[async_trait::async_trait]
impl HttpService for Crc32cPuts {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !is_put_object(&req) {
            return self.inner.execute(req).await;
        }
        let (mut parts, body) = req.into_parts();
        let chunks = super::probe::body_chunks(body).await?;
        let crc = chunks.iter().fold(0u32, |crc, c| crc32c::crc32c_append(crc, c));
        parts.headers.insert(GOOG_HASH.clone(), HeaderValue::from_str(&crc32c_hash(crc)).expect("base64 is a header value"));
        let body = PutPayload::from_iter(chunks);
        self.inner.execute(HttpRequest::from_parts(parts, body.into())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use crate::store::echo::request;

    #[test]
    fn adds_a_crc32c_only_to_a_put_of_a_whole_object() {
        let object = "https://storage.googleapis.com/bucket/wal%2Fwal-0000000000000001-0000000000000010.seg";
        assert!(is_put_object(&request(http::Method::PUT, object, &[("x-goog-if-generation-match", "0")])));
        // A part of a multipart upload, a copy, a read, the start of an upload: left alone.
        assert!(!is_put_object(&request(http::Method::PUT, &format!("{object}?partNumber=1&uploadId=u"), &[])));
        assert!(!is_put_object(&request(http::Method::PUT, object, &[("x-goog-copy-source", "bucket/other")])));
        assert!(!is_put_object(&request(http::Method::GET, object, &[])));
        assert!(!is_put_object(&request(http::Method::POST, &format!("{object}?uploads"), &[])));
    }

    /// CRC32C (Castagnoli) of "hello world" is 0xc99465aa: "yZRlqg==" as
    /// four big-endian bytes in base64.
    #[test]
    fn writes_the_crc32c_big_endian_in_base64() {
        assert_eq!(crc32c::crc32c(b"hello world"), 0xc994_65aa);
        assert_eq!(crc32c_hash(0xc994_65aa), "crc32c=yZRlqg==");
    }

    #[tokio::test]
    async fn sends_the_hash_of_the_body_it_sends() {
        let echo = crate::store::echo::Echo::default();
        let client = Crc32cPuts { inner: echo.client() };
        let payload = PutPayload::from_iter([Bytes::from_static(b"hello "), Bytes::from_static(b"world")]);
        let req = http::Request::builder().method(http::Method::PUT).uri("https://storage.googleapis.com/b/o").body(payload.into()).unwrap();
        client.call(req).await.unwrap();
        let sent = echo.last();
        assert_eq!(sent.headers.get("x-goog-hash").unwrap(), "crc32c=yZRlqg==");
        assert_eq!(sent.body, b"hello world");
    }
}
