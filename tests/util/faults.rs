//! An object store that misbehaves on purpose, driven by a seed: errors
//! before a write, errors after a write that succeeded (a lost
//! acknowledgement), truncated writes reported as success (a 0-byte object
//! counted as uploaded), failed reads, and listings that hide objects.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// How often each kind of fault fires, out of 1000 calls.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub error_before: u64,
    pub lost_ack: u64,
    pub truncate: u64,
    pub read_error: u64,
    pub hide_in_listing: u64,
    /// The longest delay before an upload completes, in milliseconds (0: none).
    pub max_delay_ms: u64,
}

impl Rates {
    pub const HOSTILE: Rates =
        Rates { error_before: 120, lost_ack: 120, truncate: 120, read_error: 60, hide_in_listing: 30, max_delay_ms: 0 };
    /// No faults, only uploads that take different times, so that they finish out of order.
    pub const SLOW: Rates =
        Rates { error_before: 0, lost_ack: 0, truncate: 0, read_error: 0, hide_in_listing: 0, max_delay_ms: 40 };
}

/// Counts of the faults that fired, so a test can show it exercised them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fired {
    pub error_before: u64,
    pub lost_ack: u64,
    pub truncate: u64,
    pub read_error: u64,
    pub hidden: u64,
}

#[derive(Debug)]
struct Dice {
    state: u64,
    fired: Fired,
}

/// What a test does at a given moment of an upload or a read, to make a race happen on cue.
pub type Hook = Arc<dyn Fn(&Path) + Send + Sync>;

/// Wraps a store; every call may misbehave as the seed decides.
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    rates: Rates,
    dice: Arc<Mutex<Dice>>,
    enabled: Arc<AtomicBool>,
    /// Called as each part of a multipart upload is sent.
    on_part: Option<Hook>,
    /// Called before each read of an object's bytes (`get`, not `head`),
    /// with the key; it may delete the object.
    on_read: Option<Hook>,
    /// While set, every put of a key holding this text is refused.
    refused: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore").field("inner", &self.inner).field("rates", &self.rates).finish()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic { store: "FaultyStore", source: format!("injected fault: {what}").into() }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64, rates: Rates) -> Self {
        let dice = Dice { state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, fired: Fired::default() };
        Self {
            inner,
            rates,
            dice: Arc::new(Mutex::new(dice)),
            enabled: Arc::new(AtomicBool::new(true)),
            on_part: None,
            on_read: None,
            refused: Arc::default(),
        }
    }

    /// Refuses every put of a key that holds `text` (None: none), until told otherwise.
    pub fn refuse_puts_of(&self, text: Option<&str>) {
        *self.refused.lock().unwrap() = text.map(str::to_owned);
    }

    /// Calls `f` with the upload's key as each part is sent.
    pub fn on_part(mut self, f: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        self.on_part = Some(Arc::new(f));
        self
    }

    /// Calls `f` with the key before each read.
    pub fn on_read(mut self, f: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        self.on_read = Some(Arc::new(f));
        self
    }

    /// Turns faults on or off (the store then behaves).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    pub fn fired(&self) -> Fired {
        self.dice.lock().unwrap().fired
    }

    fn next(&self) -> u64 {
        let mut d = self.dice.lock().unwrap();
        let mut x = d.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d.state = x;
        x
    }

    /// True with probability `per_mille`/1000, and counts it in `which`.
    fn roll(&self, per_mille: u64, which: fn(&mut Fired) -> &mut u64) -> bool {
        if !self.enabled.load(Ordering::SeqCst) || per_mille == 0 {
            return false;
        }
        let hit = self.next() % 1000 < per_mille;
        if hit {
            *which(&mut self.dice.lock().unwrap().fired) += 1;
        }
        hit
    }

    fn error_before(&self) -> bool {
        self.roll(self.rates.error_before, |f| &mut f.error_before)
    }

    fn lost_ack(&self) -> bool {
        self.roll(self.rates.lost_ack, |f| &mut f.lost_ack)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if self.refused.lock().unwrap().as_deref().is_some_and(|t| location.as_ref().contains(t)) {
            return Err(injected("put refused for its key"));
        }
        if self.error_before() {
            return Err(injected("put refused"));
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        if self.lost_ack() {
            return Err(injected("put acknowledgement lost"));
        }
        Ok(result)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        if self.error_before() {
            return Err(injected("multipart upload refused"));
        }
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        let truncate = self.roll(self.rates.truncate, |f| &mut f.truncate);
        Ok(Box::new(FaultyUpload { inner, truncate, store: self.clone(), location: location.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if let Some(hook) = self.on_read.as_ref().filter(|_| !options.head) {
            hook(location);
        }
        if self.roll(self.rates.read_error, |f| &mut f.read_error) {
            return Err(injected("read failed"));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let me = self.clone();
        self.inner
            .list(prefix)
            .filter(move |_| {
                let hide = me.roll(me.rates.hide_in_listing, |f| &mut f.hidden);
                futures::future::ready(!hide)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        if self.error_before() {
            return Err(injected("copy refused"));
        }
        self.inner.copy_opts(from, to, options).await?;
        if self.lost_ack() {
            return Err(injected("copy acknowledgement lost"));
        }
        Ok(())
    }
}

/// A multipart upload that may drop every part and still report success
/// (the truncated write), or fail its completion before or after it happened.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    truncate: bool,
    store: FaultyStore,
    location: Path,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        if let Some(hook) = &self.store.on_part {
            hook(&self.location);
        }
        if self.truncate {
            return Box::pin(async { Ok(()) });
        }
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let max = self.store.rates.max_delay_ms;
        if max > 0 {
            let ms = self.store.next() % max;
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        if self.store.error_before() {
            self.inner.abort().await?;
            return Err(injected("complete refused"));
        }
        let result = self.inner.complete().await?;
        if self.store.lost_ack() {
            return Err(injected("complete acknowledgement lost"));
        }
        Ok(result)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
