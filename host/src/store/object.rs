//! Archives behind object_store: S3, GCS, Azure, memory, and stores a test
//! builds itself.
//!
//! Two ways to publish a segment:
//!
//! - **One verified PUT** (stores that check the checksum a PUT carries, up
//!   to [`SINGLE_PUT_MAX`]; whether a store checks is asked once per
//!   process, see [`super::probe`]): the segment is read whole into pooled
//!   buffers with its CRC32C computed on the way; once its descriptor shows
//!   no change, it is sent in one create-only request (S3 and Azure
//!   `If-None-Match: *`, GCS `x-goog-if-generation-match: 0`) carrying a
//!   checksum of its bytes that the store checks against the bytes it
//!   received and refuses on a mismatch: a CRC64NVME to S3 (object_store
//!   sends it), a Content-MD5 to Azure ([`super::azure`]), a CRC32C in
//!   `x-goog-hash` to GCS ([`super::gcs`]). Nothing is staged, copied or
//!   read back: a torn body is refused by the store, and the object is
//!   whole or absent.
//! - **Staged** (larger segments; stores that do not check the checksum,
//!   such as moto): the segment is streamed to a staging object under
//!   `_staging/` in parts, from a bounded pool of reused buffers, with its
//!   CRC32C computed on the way. Once the whole file is read and its
//!   descriptor shows no change, the staged object is checked (its size,
//!   and with `verify` its CRC32C read back) and published under its key
//!   with a create-only copy.
//!
//! Either way a torn or truncated upload never carries a segment's key, and
//! an archived object is never overwritten. A compressed segment (a `.zst`
//! key) takes the same ways with the bytes made of the file (see
//! [`crate::compress`]): one PUT when its worst-case compressed size fits.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, WriteMultipart};

use super::probe::{ProbeSlot, PROBE_NAME};
use super::{Outcome, PutError, STAGING_DIR};
use crate::compress::{Source, Sums};
use crate::bindings::wit;
use crate::storage::StorageError;
use crate::wal::SegmentFile;

/// Bytes read from a segment at a time, and the multipart part size.
pub const CHUNK: usize = 8 * 1024 * 1024;
/// Bytes read back at a time from a local or in-memory store. Smaller than
/// a chunk: each read allocates, and small blocks are reused by the
/// allocator where 8 MiB ones are mapped and faulted in again each time.
const READBACK_RANGE: u64 = 1024 * 1024;
/// Upload buffers when nobody says how many uploads run at once.
const DEFAULT_BUFFERS: usize = 5;
/// Parts in flight at once during one upload: bounds memory per upload.
const PARTS_IN_FLIGHT: usize = 2;
/// The largest segment sent in one verified PUT by default; larger ones are
/// staged in parts. A whole segment is held in memory while it is sent, so
/// this and the concurrency bound what uploads hold (`--single-put-max`).
pub const SINGLE_PUT_MAX: u64 = 64 << 20;
/// The largest `--single-put-max`: S3's own limit for one PUT.
pub const SINGLE_PUT_LIMIT: u64 = 5 << 30;
/// Azure's limit for one Put Blob (service version 2019-12-12 and later;
/// object_store speaks 2023-11-03): larger segments are staged whatever
/// `--single-put-max` says.
pub const AZURE_PUT_LIMIT: u64 = 5000 << 20;
/// How long an archiver goes on staging after a probe that could not tell
/// whether the store checks a PUT's checksum, before it asks again.
const PROBE_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// An object store and how to read it back.
#[derive(Debug, Clone)]
pub struct StoreBackend {
    store: Arc<dyn ObjectStore>,
    buffers: Arc<BufferPool>,
    /// Read back in ranges (a local or in-memory store), or in one streamed GET (a remote one).
    ranged_readback: bool,
    /// Set for S3 with a checksum algorithm: where the probe's wrapper
    /// reports; see [`super::probe`].
    probe: Option<Arc<ProbeSlot>>,
    /// The probe's answer, once it gave one: segments up to
    /// `single_put_max` go in one PUT only where the store checks its
    /// checksum. Until then, when the last probe could not tell.
    checks_puts: Arc<tokio::sync::Mutex<(Option<bool>, Option<std::time::Instant>)>>,
    /// The largest segment (or compressed segment, at worst) sent in one
    /// PUT; [`SINGLE_PUT_MAX`] unless set; 0 stages every segment.
    single_put_max: u64,
    /// The store's own limit for one PUT, which `single_put_max` never passes.
    put_limit: u64,
}

fn store_err<'a>(verb: &'static str, url: &'a str) -> impl FnOnce(object_store::Error) -> StorageError + 'a {
    move |cause| StorageError::Store { verb, url: url.to_owned(), cause }
}

fn location(key: &str) -> Result<ObjectPath, StorageError> {
    ObjectPath::parse(key).map_err(|e| StorageError::RefusedKey { key: key.to_owned(), expected: e.to_string() })
}

impl StoreBackend {
    pub fn new(store: Arc<dyn ObjectStore>, ranged_readback: bool, probe: Option<Arc<ProbeSlot>>) -> Self {
        let backend = Self {
            store,
            buffers: BufferPool::new(DEFAULT_BUFFERS),
            ranged_readback,
            probe,
            checks_puts: Default::default(),
            single_put_max: SINGLE_PUT_MAX,
            put_limit: SINGLE_PUT_LIMIT,
        };
        backend.size_buffers(1);
        backend
    }

    /// Sizes the buffer pool for `uploads` at once: each one whole segment
    /// of up to [`SINGLE_PUT_MAX`] with verified PUTs, else one part at a
    /// time, and one buffer more so that a read can go on while parts are
    /// sent. Buffers are made only when taken, so this bounds memory; it
    /// does not fill it.
    pub fn size_buffers(&self, uploads: usize) {
        let per_upload = if self.probe.is_some() { self.single_put_max.div_ceil(CHUNK as u64).max(1) as usize } else { 1 };
        self.buffers.resize((uploads.max(1) * per_upload + 1).max(DEFAULT_BUFFERS));
    }

    /// True when segments up to [`SINGLE_PUT_MAX`] go in one verified PUT:
    /// the store checks the checksum each PUT carries. Asked of the store
    /// once, at the first upload.
    pub async fn verified_puts(&self, prefix: &str, url: &str) -> bool {
        let Some(slot) = &self.probe else { return false };
        // Uploads wait for a probe in flight rather than each sending one.
        let mut known = self.checks_puts.lock().await;
        if let (Some(answer), _) = *known {
            return answer;
        }
        // A probe that could not tell (a network error, say) is asked again
        // after a while; meanwhile segments take the staged path.
        if known.1.is_some_and(|t| t.elapsed() < PROBE_AGAIN_AFTER) {
            return false;
        }
        let answer = super::probe::store_checks_puts(&*self.store, slot, &staging_key(prefix, PROBE_NAME), url, self.single_put_max).await;
        *known = (answer, Some(std::time::Instant::now()));
        answer.unwrap_or(false)
    }

    /// Sends segments up to `max` bytes in one PUT (0: none); see [`SINGLE_PUT_MAX`].
    pub fn set_single_put_max(&mut self, max: u64) {
        self.single_put_max = max.min(self.put_limit);
    }

    /// Caps one PUT at the store's own limit (see [`AZURE_PUT_LIMIT`]).
    pub fn set_put_limit(&mut self, limit: u64) {
        self.put_limit = limit;
        self.single_put_max = self.single_put_max.min(limit);
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn buffers(&self) -> &BufferPool {
        &self.buffers
    }

    /// Every object under the prefix, by its parts below it. A key that
    /// object_store cannot make a path of (a control character, `..`) fails
    /// the listing; the error names it.
    pub(super) async fn list(&self, prefix: &str, url: &str) -> Result<Vec<(Vec<String>, bool, wit::EntryKind, u64)>, StorageError> {
        let prefix_path = if prefix.is_empty() { None } else { Some(ObjectPath::from(prefix)) };
        let depth = prefix_path.as_ref().map_or(0, |p| p.parts().count());
        let mut out = Vec::new();
        let mut stream = self.store.list(prefix_path.as_ref());
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|cause| StorageError::Store { verb: "list", url: url.to_owned(), cause })?;
            let parts: Vec<String> = meta.location.parts().skip(depth).map(|p| p.as_ref().to_owned()).collect();
            out.push((parts, true, wit::EntryKind::File, meta.size));
        }
        Ok(out)
    }

    /// Removes the objects under `staging` (a key) of this archiver's
    /// naming that `stale` says are old enough, given their last
    /// modification as time since the epoch.
    pub(super) async fn remove_staging_leftovers(
        &self,
        staging: &str,
        url: &str,
        stale: impl Fn(std::time::Duration) -> bool,
    ) -> Result<Vec<String>, StorageError> {
        let mut listing = self.store.list(Some(&ObjectPath::from(staging)));
        let mut old = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(store_err("list", url))?;
            let Some(name) = meta.location.filename().map(str::to_owned) else { continue };
            let modified = u64::try_from(meta.last_modified.timestamp()).map(std::time::Duration::from_secs);
            if super::is_own_staging_name(&name) && modified.is_ok_and(&stale) {
                old.push((meta.location, name));
            }
        }
        let mut removed = Vec::new();
        for (location, name) in old {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed.push(name),
                Err(cause) => return Err(StorageError::Store { verb: "remove a leftover from", url: url.to_owned(), cause }),
            }
        }
        Ok(removed)
    }

    /// Publishes in one verified PUT or through a staging object; see the
    /// module docs. With `level`, what is sent is the file compressed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn publish(
        &self,
        file: &SegmentFile,
        key: &str,
        size: u64,
        verify: bool,
        level: Option<i32>,
        prefix: &str,
        url: &str,
    ) -> Result<Outcome, StorageError> {
        let display = |k: &str| format!("{url}/{}", k.strip_prefix(&format!("{prefix}/")).unwrap_or(k));
        let src = file.file.try_clone().map_err(|cause| StorageError::Io { verb: "read", path: file.path.clone(), cause })?;
        let source = Source::new(Arc::new(src), level).map_err(|cause| StorageError::Io { verb: "compress", path: file.path.clone(), cause })?;
        if source.bound(size) <= self.single_put_max && self.verified_puts(prefix, url).await {
            return self.put_whole(file, source, key, size, &display(key)).await;
        }
        let dest = location(key)?;
        let name = key.rsplit('/').next().unwrap_or(key);
        let staging_key = staging_key(prefix, name);
        let staging = location(&staging_key)?;
        let sums = self.put_streaming(file, source, &staging, &display(&staging_key)).await?;
        let outcome = async {
            // The file must be as it was, and whole: else nothing carries the key.
            file.check_unchanged(sums.read.size, Some(size))?;
            let staged_size = self.store.head(&staging).await.map_err(store_err("stat", &display(&staging_key)))?.size;
            let outcome = |stored_size, stored_crc, existing| Outcome { read: sums.read, made: sums.object, stored_size, stored_crc, existing };
            if staged_size != sums.object.size {
                // A store that acknowledged fewer bytes than were sent: never publish it.
                return Ok(outcome(staged_size, None, false));
            }
            let staged_crc = if verify { Some(self.checksum(&staging_key, &display(&staging_key)).await?.1) } else { None };
            if staged_crc.is_some_and(|c| c != sums.object.crc) {
                return Ok(outcome(staged_size, staged_crc, false));
            }
            match self.store.copy_if_not_exists(&staging, &dest).await {
                Ok(()) => {
                    let stored = self.store.head(&dest).await.map_err(store_err("stat", &display(key)))?.size;
                    Ok(outcome(stored, staged_crc, false))
                }
                Err(object_store::Error::AlreadyExists { .. }) => Ok(outcome(0, None, true)),
                Err(cause) => Err(StorageError::Store { verb: "publish", url: display(key), cause }),
            }
        }
        .await;
        // The staging object is garbage whatever happened.
        if let Err(e) = self.store.delete(&staging).await {
            tracing::warn!("cannot remove staging object {}: {}", display(&staging_key), super::describe(&e));
        }
        outcome
    }

    /// Sends the whole segment in one create-only PUT that carries its
    /// checksum for the store to check. The store's check is the
    /// verification: the object holds the bytes sent, or the PUT failed.
    async fn put_whole(&self, file: &SegmentFile, source: Source, key: &str, size: u64, url: &str) -> Result<Outcome, StorageError> {
        let dest = location(key)?;
        // Every buffer the segment needs, taken at once: two uploads that each
        // held some and waited for more could wait for each other.
        let chunks = self.buffers.take_many(source.bound(size).div_ceil(CHUNK as u64).max(1) as usize).await;
        let path = file.path.clone();
        let (chunks, sums) = tokio::task::spawn_blocking(move || {
            let mut chunks = chunks;
            let mut source = source;
            let read_err = |cause: std::io::Error| StorageError::Io { verb: crate::compress::fill_verb(&cause), path: path.clone(), cause };
            for chunk in &mut chunks {
                match source.fill(&mut chunk.buf) {
                    Ok(n) => chunk.len = n,
                    Err(e) => return (chunks, Err(read_err(e))),
                }
                if chunk.len < chunk.buf.len() {
                    break;
                }
            }
            // The buffers hold all a file of `size` bytes can make: more is a
            // file that grew while it was read.
            match source.fill(&mut [0u8; 1]) {
                Ok(0) => {}
                Ok(_) => return (chunks, Err(StorageError::Changed { path: path.clone(), why: format!("it grew past {size} bytes while it was read") })),
                Err(e) => return (chunks, Err(read_err(e))),
            }
            let sums = source.finish().map_err(|why| StorageError::Io { verb: "compress", path: path.clone(), cause: std::io::Error::other(why) });
            (chunks, sums)
        })
        .await
        .map_err(|e| StorageError::Io { verb: "read", path: file.path.clone(), cause: std::io::Error::other(e) })?;
        let sums = sums?;
        // The file must be as it was, and whole: else nothing is sent.
        file.check_unchanged(sums.read.size, Some(size))?;
        let payload: object_store::PutPayload = chunks.into_iter().filter(|c| c.len > 0).map(Bytes::from_owner).collect();
        let outcome = |stored_crc, existing| Outcome { read: sums.read, made: sums.object, stored_size: sums.object.size, stored_crc, existing };
        match self.store.put_opts(&dest, payload, PutMode::Create.into()).await {
            Ok(_) => Ok(outcome(Some(sums.object.crc), false)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(outcome(None, true)),
            Err(cause) => Err(StorageError::Store { verb: "upload to", url: url.to_owned(), cause }),
        }
    }

    /// Streams the source into a multipart upload at `location`.
    async fn put_streaming(&self, file: &SegmentFile, source: Source, location: &ObjectPath, url: &str) -> Result<Sums, StorageError> {
        let upload = self.store.put_multipart(location).await.map_err(store_err("upload to", url))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        match stream_into(&self.buffers, file, source, &mut writer, url).await {
            Ok(done) => {
                writer.finish().await.map_err(store_err("upload to", url))?;
                Ok(done)
            }
            Err(e) => {
                // Best effort: the error that matters is the one already in hand.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Writes a small object, create-only.
    pub(super) async fn put_create(&self, key: &str, body: Bytes, url: &str) -> Result<(), PutError> {
        let location = location(key).map_err(PutError::Failed)?;
        match self.store.put_opts(&location, body.into(), PutMode::Create.into()).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(PutError::Exists),
            Err(cause) => Err(PutError::Failed(StorageError::Store { verb: "write", url: url.to_owned(), cause })),
        }
    }

    pub(super) async fn size(&self, key: &str, url: &str) -> Result<Option<u64>, StorageError> {
        match self.store.head(&location(key)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(cause) => Err(StorageError::Store { verb: "stat", url: url.to_owned(), cause }),
        }
    }

    /// Size and CRC32C of a stored object, read back in full: from a local
    /// or in-memory store one ranged read at a time, from a remote one as
    /// one streamed GET (a request per megabyte would cost a round trip
    /// each). Memory stays flat whatever the object's size.
    pub(super) async fn checksum(&self, key: &str, url: &str) -> Result<(u64, u32), StorageError> {
        let location = location(key)?;
        let missing = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => StorageError::Missing { verb: "read back", url: url.to_owned() },
            cause => StorageError::Store { verb: "read back", url: url.to_owned(), cause },
        };
        if !self.ranged_readback {
            let got = self.store.get(&location).await.map_err(missing)?;
            let size = got.meta.size;
            let mut stream = got.into_stream();
            let (mut crc, mut read) = (0u32, 0u64);
            while let Some(bytes) = stream.next().await {
                let bytes = bytes.map_err(store_err("read back", url))?;
                crc = crc32c::crc32c_append(crc, &bytes);
                read += bytes.len() as u64;
            }
            if read != size {
                return Err(StorageError::Store {
                    verb: "read back",
                    url: url.to_owned(),
                    cause: object_store::Error::Generic { store: "read back", source: format!("{read} bytes read of {size}").into() },
                });
            }
            return Ok((size, crc));
        }
        let size = self.store.head(&location).await.map_err(missing)?.size;
        let mut crc = 0u32;
        let mut offset = 0u64;
        while offset < size {
            let end = (offset + READBACK_RANGE).min(size);
            // Gone between the head and this read: missing, like gone before it.
            let bytes = self.store.get_range(&location, offset..end).await.map_err(missing)?;
            if bytes.is_empty() {
                break;
            }
            crc = crc32c::crc32c_append(crc, &bytes);
            offset += bytes.len() as u64;
        }
        Ok((offset, crc))
    }

    /// The object's bytes, as the store streams them.
    pub(super) async fn read(&self, key: &str, url: &str) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let got = self.store.get(&location(key)?).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => StorageError::Missing { verb: "read", url: url.to_owned() },
            cause => StorageError::Store { verb: "read", url: url.to_owned(), cause },
        })?;
        let url = url.to_owned();
        Ok(got.into_stream().map(move |r| r.map_err(|cause| StorageError::Store { verb: "read", url: url.clone(), cause })).boxed())
    }

    pub(super) async fn delete(&self, key: &str, url: &str) -> Result<(), StorageError> {
        match self.store.delete(&location(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(cause) => Err(StorageError::Store { verb: "delete", url: url.to_owned(), cause }),
        }
    }
}

/// A staging key unique to this upload, under `{prefix}/_staging/`.
fn staging_key(prefix: &str, name: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let token = format!("{name}.{}-{nanos:x}-{n}", std::process::id());
    if prefix.is_empty() {
        format!("{STAGING_DIR}/{token}")
    } else {
        format!("{prefix}/{STAGING_DIR}/{token}")
    }
}

/// The upload buffers of one archive, [`CHUNK`] bytes each. An upload waits
/// for a free buffer before it reads the next chunk, and a buffer comes back
/// when the store is done with the part it holds: the memory that uploads
/// hold is the pool's size times [`CHUNK`], however many run at once, and a
/// buffer is reused instead of being allocated and faulted in for every chunk.
pub struct BufferPool {
    permits: Arc<tokio::sync::Semaphore>,
    free: std::sync::Mutex<Vec<Vec<u8>>>,
    size: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool").field("size", &self.size()).finish()
    }
}

impl BufferPool {
    fn new(size: usize) -> Arc<Self> {
        let size = size.max(2);
        Arc::new(Self { permits: Arc::new(tokio::sync::Semaphore::new(size)), free: std::sync::Mutex::new(Vec::new()), size: size.into() })
    }

    /// How many buffers may exist at once.
    pub fn size(&self) -> usize {
        self.size.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets how many buffers may exist at once; at least two, so that one
    /// can be read into while another is sent. Meant for setup: a buffer in
    /// use when the pool shrinks is dropped when it comes back.
    pub fn resize(&self, n: usize) {
        let n = n.max(2);
        let old = self.size.swap(n, std::sync::atomic::Ordering::SeqCst);
        if n > old {
            self.permits.add_permits(n - old);
        } else {
            self.permits.forget_permits(old - n);
        }
    }

    async fn take(self: &Arc<Self>) -> PooledChunk {
        let permit = self.permits.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
        self.chunk(permit)
    }

    /// `n` buffers, taken at once (no more than the pool holds).
    async fn take_many(self: &Arc<Self>, n: usize) -> Vec<PooledChunk> {
        let n = n.clamp(1, self.size());
        let mut permits = self.permits.clone().acquire_many_owned(n as u32).await.expect("the pool's semaphore is never closed");
        let mut out: Vec<PooledChunk> = (1..n).map(|_| self.chunk(permits.split(1).expect("one permit of several"))).collect();
        out.push(self.chunk(permits));
        out
    }

    fn chunk(self: &Arc<Self>, permit: tokio::sync::OwnedSemaphorePermit) -> PooledChunk {
        let buf = self.free.lock().expect("pool lock").pop().unwrap_or_else(|| vec![0u8; CHUNK]);
        PooledChunk { buf, len: 0, pool: self.clone(), _permit: permit }
    }
}

/// One buffer of the pool and how much of it holds data; it goes back to
/// the pool when dropped, which for a sent part is when the store is done.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        // Back on the free list before the permit is released (fields drop after this).
        let mut free = self.pool.free.lock().expect("pool lock");
        if free.len() < self.pool.size() {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Reads the source into the multipart writer, one pooled buffer at a
/// time. Each buffer is handed to the writer as it is, no copy, and the
/// next chunk is read while the last one is sent.
async fn stream_into(
    pool: &Arc<BufferPool>,
    file: &SegmentFile,
    mut source: Source,
    writer: &mut WriteMultipart,
    url: &str,
) -> Result<Sums, StorageError> {
    let io_err = |cause| StorageError::Io { verb: "read", path: file.path.clone(), cause };
    loop {
        let chunk = pool.take().await;
        let (mut chunk, source_back, filled) = tokio::task::spawn_blocking(move || {
            let mut chunk = chunk;
            let filled = source.fill(&mut chunk.buf);
            (chunk, source, filled)
        })
        .await
        .map_err(|e| io_err(std::io::Error::other(e)))?;
        source = source_back;
        chunk.len = filled.map_err(|cause| StorageError::Io { verb: crate::compress::fill_verb(&cause), path: file.path.clone(), cause })?;
        if chunk.len == 0 {
            break;
        }
        let last = chunk.len < CHUNK;
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(store_err("upload to", url))?;
        writer.put(Bytes::from_owner(chunk));
        if last {
            break;
        }
    }
    source.finish().map_err(|why| StorageError::Io { verb: "compress", path: file.path.clone(), cause: std::io::Error::other(why) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_sends_more_in_one_put_than_the_store_takes() {
        let mut s3 = StoreBackend::new(Arc::new(object_store::memory::InMemory::new()), true, None);
        s3.set_single_put_max(6 << 30);
        assert_eq!(s3.single_put_max, SINGLE_PUT_LIMIT);
        let mut azure = StoreBackend::new(Arc::new(object_store::memory::InMemory::new()), true, None);
        azure.set_put_limit(AZURE_PUT_LIMIT);
        azure.set_single_put_max(SINGLE_PUT_LIMIT);
        assert_eq!(azure.single_put_max, AZURE_PUT_LIMIT);
        azure.set_single_put_max(1 << 20);
        assert_eq!(azure.single_put_max, 1 << 20);
        // An Azure archive, as its settings make it, has Azure's limit.
        let settings = [
            ("azure_storage_account_name".to_owned(), "devstoreaccount1".to_owned()),
            ("azure_storage_use_emulator".to_owned(), "true".to_owned()),
        ];
        let archive = super::super::Archive::open_with("az://container/p", &settings, 0).unwrap().with_single_put_max(SINGLE_PUT_LIMIT);
        let super::super::Backend::Store(b) = &archive.backend else { panic!("an object store") };
        assert_eq!(b.single_put_max, AZURE_PUT_LIMIT);
    }
}
