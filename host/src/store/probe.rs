//! Whether a store checks the checksum sent with a PUT against the body it
//! received: S3, s3s-fs, Azure and Azurite do (a CRC64NVME for S3, a
//! Content-MD5 for Azure, see [`super::azure`]), and GCS says it does (an
//! `x-goog-hash` CRC32C, see [`super::gcs`]); moto and some S3-compatible
//! stores do not, and only a store that checks makes one PUT a verified
//! write.
//!
//! The question is asked once per process, with one object: a small body
//! is sent with the checksum object_store computed for it, and the HTTP
//! client under object_store (a wrapper of ours around its reqwest client)
//! flips one byte of that body on the way out. A store that checks refuses
//! it (`BadDigest`); one that stores it does not check, and segments then
//! go the staged way, read back. The probe object is removed either way.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode};

/// A request body's chunks, shared, not copied (a segment's pooled
/// buffers): what the wrappers that checksum a body read, and send again as
/// `PutPayload::from_iter(chunks)`.
pub(super) async fn body_chunks(mut body: object_store::client::HttpRequestBody) -> Result<Vec<Bytes>, HttpError> {
    use http_body_util::BodyExt as _;
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            chunks.push(data);
        }
    }
    Ok(chunks)
}

/// The probe object's name under `_staging/`.
pub(super) const PROBE_NAME: &str = ".checksum-probe";
/// The probe's body, as object_store checksums it.
const PROBE_BODY: &[u8] = b"wal-archiver: does this store check the checksum of a PUT?\n";

/// What the probe and the wrapper share: the probe's key while it is in
/// flight, and the HTTP status of its PUT.
#[derive(Debug, Default)]
pub struct ProbeSlot {
    key: Mutex<Option<String>>,
    status: Mutex<Option<u16>>,
}

/// Makes object_store's HTTP clients: reqwest's, wrapped to corrupt the
/// probe's body.
#[derive(Debug)]
pub struct ProbingConnector {
    pub slot: Arc<ProbeSlot>,
}

impl HttpConnector for ProbingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Probing { inner, slot: self.slot.clone() }))
    }
}

#[derive(Debug)]
struct Probing {
    inner: HttpClient,
    slot: Arc<ProbeSlot>,
}

/// Only the PUT of the probe in flight, by the last part of its key (a
/// name of safe characters, so not changed by URL encoding).
fn is_probe(req: &HttpRequest, slot: &ProbeSlot) -> bool {
    let key = slot.key.lock().expect("probe slot lock");
    let Some(name) = key.as_deref().and_then(|k| k.rsplit('/').next()) else { return false };
    req.method() == http::Method::PUT
        && req.uri().path().ends_with(&format!("/{name}"))
        && req.body().content_length() == PROBE_BODY.len()
}

#[async_trait::async_trait]
impl HttpService for Probing {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !is_probe(&req, &self.slot) {
            return self.inner.execute(req).await;
        }
        let (parts, _) = req.into_parts();
        let mut body = PROBE_BODY.to_vec();
        body[PROBE_BODY.len() / 2] ^= 0x01;
        let response = self.inner.execute(HttpRequest::from_parts(parts, Bytes::from(body).into())).await?;
        *self.slot.status.lock().expect("probe slot lock") = Some(response.status().as_u16());
        Ok(response)
    }
}

/// Asks the store under `key` (a staging key); see the module docs.
/// `Some(true)` when the store refused the corrupted body for its
/// checksum, `Some(false)` when it stored it, `None` when the answer said
/// neither (a network error, another refusal): ask again later.
pub(super) async fn store_checks_puts(store: &dyn ObjectStore, slot: &ProbeSlot, key: &str, url: &str, single_put_max: u64) -> Option<bool> {
    let location = ObjectPath::from(key);
    *slot.status.lock().expect("probe slot lock") = None;
    *slot.key.lock().expect("probe slot lock") = Some(key.to_owned());
    let result = store.put_opts(&location, PROBE_BODY.into(), PutMode::Create.into()).await;
    *slot.key.lock().expect("probe slot lock") = None;
    let status = slot.status.lock().expect("probe slot lock").take();
    if let Err(e) = store.delete(&location).await
        && !matches!(e, object_store::Error::NotFound { .. })
    {
        tracing::warn!("cannot remove the checksum probe {key} from {url}: {}", super::describe(&e));
    }
    let refused_for_checksum = |e: &object_store::Error| {
        let text = super::describe(e);
        ["BadDigest", "InvalidDigest", "ChecksumMismatch", "Md5Mismatch", "CrcMismatch", "checksum"].iter().any(|code| text.contains(code))
    };
    match (status, &result) {
        (Some(400), Err(e)) if refused_for_checksum(e) => {
            tracing::info!(
                "{url} checks the checksum of each PUT: segments up to {} go in one PUT",
                crate::size::format_size(single_put_max)
            );
            Some(true)
        }
        (Some(200..=299), _) => {
            tracing::warn!(
                "{url} does not check the checksum sent with a PUT (a body that did not match it was stored): \
                 segments are staged and read back"
            );
            Some(false)
        }
        (_, Err(e)) => {
            tracing::warn!(
                "cannot tell whether {url} checks the checksum of a PUT ({}): segments are staged and read back \
                 until it can be asked again",
                super::describe(e)
            );
            None
        }
        (_, Ok(_)) => {
            tracing::warn!("cannot tell whether {url} checks the checksum of a PUT: segments are staged and read back until it can be asked again");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(path: &str, body: &[u8]) -> HttpRequest {
        http::Request::builder().method(http::Method::PUT).uri(format!("http://127.0.0.1:9/bucket/{path}")).body(Bytes::copy_from_slice(body).into()).unwrap()
    }

    #[test]
    fn corrupts_only_the_put_of_the_probe_in_flight() {
        let slot = ProbeSlot::default();
        let key = "wal/_staging/.checksum-probe.42-18eba-0";
        assert!(!is_probe(&put(key, PROBE_BODY), &slot), "no probe in flight");
        *slot.key.lock().unwrap() = Some(key.to_owned());
        assert!(is_probe(&put(key, PROBE_BODY), &slot));
        // A segment, even under a prefix that looks like the probe's, and a
        // body of another length, are left alone.
        assert!(!is_probe(&put("wal/_staging/.checksum-probe.42-18eba-0/wal-0000000000000001-0000000000000010.seg", PROBE_BODY), &slot));
        assert!(!is_probe(&put(key, b"another body"), &slot));
        let get = http::Request::builder().uri(format!("http://127.0.0.1:9/bucket/{key}")).body(Bytes::new().into()).unwrap();
        assert!(!is_probe(&get, &slot));
    }
}
