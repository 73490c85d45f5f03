//! Whether an S3 store checks the checksum sent with a PUT against the body
//! it received: S3 and s3s-fs do, moto and some S3-compatible stores do
//! not, and only a store that checks makes one PUT a verified write.
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

/// The probe object's name under `_staging/`.
pub(super) const PROBE_NAME: &str = ".checksum-probe";
/// The probe's body, as object_store checksums it.
const PROBE_BODY: &[u8] = b"wal-archiver: does this store check the checksum of a PUT?\n";

/// Where the wrapper leaves the HTTP status of the probe's PUT.
#[derive(Debug, Default)]
pub struct ProbeSlot {
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

fn is_probe(req: &HttpRequest) -> bool {
    req.method() == http::Method::PUT
        && req.uri().path().contains(&format!("/_staging/{PROBE_NAME}."))
        && req.body().content_length() == PROBE_BODY.len()
}

#[async_trait::async_trait]
impl HttpService for Probing {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if !is_probe(&req) {
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
/// True only when the store refused the corrupted body for its checksum.
pub(super) async fn store_checks_puts(store: &dyn ObjectStore, slot: &ProbeSlot, key: &str, url: &str) -> bool {
    let location = ObjectPath::from(key);
    *slot.status.lock().expect("probe slot lock") = None;
    let result = store.put_opts(&location, PROBE_BODY.into(), PutMode::Create.into()).await;
    let status = slot.status.lock().expect("probe slot lock").take();
    if let Err(e) = store.delete(&location).await {
        if !matches!(e, object_store::Error::NotFound { .. }) {
            tracing::warn!("cannot remove the checksum probe {key} from {url}: {}", super::describe(&e));
        }
    }
    let refused_for_checksum = |e: &object_store::Error| {
        let text = super::describe(e);
        ["BadDigest", "InvalidDigest", "ChecksumMismatch", "checksum"].iter().any(|code| text.contains(code))
    };
    match (status, &result) {
        (Some(400), Err(e)) if refused_for_checksum(e) => {
            tracing::info!("{url} checks the checksum of each PUT: segments up to 64 MiB go in one PUT");
            true
        }
        (Some(200..=299), _) => {
            tracing::warn!(
                "{url} does not check the checksum sent with a PUT (a body that did not match it was stored): \
                 segments are staged and read back"
            );
            false
        }
        (_, Err(e)) => {
            tracing::warn!(
                "cannot tell whether {url} checks the checksum of a PUT ({}): segments are staged and read back",
                super::describe(e)
            );
            false
        }
        (_, Ok(_)) => {
            tracing::warn!("cannot tell whether {url} checks the checksum of a PUT: segments are staged and read back");
            false
        }
    }
}
