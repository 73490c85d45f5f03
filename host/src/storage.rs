//! The host's side of the `storage` imports: the confined WAL directory and
//! the archive behind object_store.
//!
//! Every name the planner hands over must be a single entry directly inside
//! the WAL directory: no `/`, no `..`, never absolute, and a symlink is never
//! followed. Every key must be `{prefix}/{that name}`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutMode, WriteMultipart};
use tokio::runtime::Handle;
use url::Url;

use crate::component::wit;

/// Bytes read from a segment at a time, and the multipart part size.
pub const CHUNK: usize = 8 * 1024 * 1024;
/// Bytes read back at a time from a local or in-memory archive. Smaller than
/// a chunk: each read allocates, and small blocks are reused by the
/// allocator where 8 MiB ones are mapped and faulted in again each time.
const READBACK_RANGE: u64 = 1024 * 1024;
/// Upload buffers when nobody says how many uploads run at once.
const DEFAULT_BUFFERS: usize = 5;
/// Where uploads are staged before they are published under their key.
pub const STAGING_DIR: &str = "_staging";
/// Where checksum markers live: `{prefix}/_checksums/{name}.crc32c-{8 hex}-{size}`.
pub const CHECKSUM_DIR: &str = "_checksums";
const MARKER_INFIX: &str = ".crc32c-";
/// object_store's retries of one request, by default.
pub const DEFAULT_REQUEST_RETRIES: usize = 3;
/// Parts in flight at once during one upload: bounds memory per upload.
const PARTS_IN_FLIGHT: usize = 2;

/// Why a storage operation failed. Each variant names the file or object.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot use WAL directory {}: {source}", path.display())]
    WalDir { path: PathBuf, source: io::Error },
    #[error("refused name {name:?}: {why}")]
    RefusedName { name: String, why: &'static str },
    #[error("refused key {key:?}: it is not {expected:?}")]
    RefusedKey { key: String, expected: String },
    #[error("cannot read segment {}: not found", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read segment {}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("cannot {verb} {}: {source}", path.display())]
    Io { verb: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot {verb} {url}: {source}")]
    Store { verb: &'static str, url: String, source: object_store::Error },
    #[error("cannot delete {}: the archive holds no verified copy of it at {url} ({found} bytes there; the local file has {want} bytes, CRC32C {crc:08x})", path.display())]
    NotArchived { path: PathBuf, url: String, found: u64, want: u64, crc: u32 },
    #[error("cannot archive {url}: the archive already holds a different object there ({found_size} bytes, CRC32C {found_crc:08x}; this segment has {size} bytes, CRC32C {crc:08x}); it was left untouched")]
    Conflict { url: String, size: u64, crc: u32, found_size: u64, found_crc: u32 },
    #[error("cannot open archive {url}: {why}")]
    BadUrl { url: String, why: String },
}

impl From<StorageError> for wit::StorageError {
    fn from(e: StorageError) -> Self {
        let text = e.to_string();
        match e {
            StorageError::RefusedName { .. } | StorageError::RefusedKey { .. } => Self::Refused(text),
            StorageError::NotFound { .. } => Self::NotFound(text),
            StorageError::NotAFile { .. } => Self::NotAFile(text),
            _ => Self::Io(text),
        }
    }
}

/// The WAL directory, seen only through names directly inside it.
#[derive(Debug, Clone)]
pub struct WalDir {
    root: PathBuf,
    /// Host files kept in the directory (the state file) that are not WAL.
    hidden: Vec<OsString>,
}

impl WalDir {
    /// Opens an existing directory.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let wal_err = |source| StorageError::WalDir { path: path.to_owned(), source };
        let root = std::fs::canonicalize(path).map_err(wal_err)?;
        if !std::fs::metadata(&root).map_err(wal_err)?.is_dir() {
            return Err(wal_err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory")));
        }
        Ok(Self { root, hidden: Vec::new() })
    }

    /// Leaves `name` out of listings: a file of the host's own.
    pub fn hide(mut self, name: impl Into<OsString>) -> Self {
        self.hidden.push(name.into());
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists the entries directly inside, without following symlinks.
    pub fn list(&self) -> Result<wit::DirListing, StorageError> {
        let wal_err = |source| StorageError::WalDir { path: self.root.clone(), source };
        let mut out = wit::DirListing::default();
        for entry in std::fs::read_dir(&self.root).map_err(wal_err)? {
            let entry = entry.map_err(wal_err)?;
            let name = entry.file_name();
            if self.hidden.contains(&name) {
                continue;
            }
            // A file that vanished between readdir and lstat is simply not listed.
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(wal_err(e)),
            };
            let ft = meta.file_type();
            let kind = if ft.is_file() {
                wit::EntryKind::File
            } else if ft.is_dir() {
                wit::EntryKind::Dir
            } else if ft.is_symlink() {
                wit::EntryKind::Symlink
            } else {
                wit::EntryKind::Other
            };
            let (name, utf8) = match name.into_string() {
                Ok(s) => (s, true),
                Err(raw) => (raw.to_string_lossy().into_owned(), false),
            };
            let size = if ft.is_file() { meta.len() } else { 0 };
            out.push(&name, utf8, kind, size);
        }
        Ok(out)
    }

    /// Checks that `name` is a plain file name: not empty, not `.` or `..`,
    /// no `/` and no NUL.
    pub fn check_name(name: &str) -> Result<(), StorageError> {
        let why = if name.is_empty() {
            Some("empty")
        } else if name == "." || name == ".." {
            Some("not an entry name")
        } else if name.contains('/') || name.contains('\0') {
            Some("not directly inside the directory")
        } else {
            None
        };
        match why {
            Some(why) => Err(StorageError::RefusedName { name: name.to_owned(), why }),
            None => Ok(()),
        }
    }

    /// The path of `name`, once it is known to be a plain entry name and not
    /// one of the archiver's own files.
    pub fn entry_path(&self, name: &str) -> Result<PathBuf, StorageError> {
        Self::check_name(name)?;
        if self.hidden.iter().any(|h| h == name) {
            return Err(StorageError::RefusedName { name: name.to_owned(), why: "a file of the archiver's own" });
        }
        Ok(self.root.join(name))
    }

    /// Opens a segment for reading: never through a symlink, never a FIFO or device.
    pub fn open_segment(&self, name: &str) -> Result<File, StorageError> {
        let path = self.entry_path(name)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            // O_NONBLOCK: opening a FIFO named like a segment must not hang.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENOENT) => StorageError::NotFound { path: path.clone() },
                Some(libc::ELOOP) => StorageError::NotAFile { path: path.clone() },
                _ => StorageError::Io { verb: "open", path: path.clone(), source },
            })?;
        let ft = file
            .metadata()
            .map_err(|source| StorageError::Io { verb: "stat", path: path.clone(), source })?
            .file_type();
        if !ft.is_file() || ft.is_fifo() {
            return Err(StorageError::NotAFile { path });
        }
        Ok(file)
    }

    /// Size of a regular file entry, without following symlinks.
    pub fn segment_size(&self, name: &str) -> Result<u64, StorageError> {
        let path = self.entry_path(name)?;
        match path.symlink_metadata() {
            Ok(m) if m.file_type().is_file() => Ok(m.len()),
            Ok(_) => Err(StorageError::NotAFile { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound { path }),
            Err(source) => Err(StorageError::Io { verb: "stat", path, source }),
        }
    }

    /// Removes a regular file entry and makes the removal durable.
    pub fn remove_segment(&self, name: &str) -> Result<(), StorageError> {
        let path = self.entry_path(name)?;
        self.segment_size(name)?;
        std::fs::remove_file(&path)
            .map_err(|source| StorageError::Io { verb: "delete", path: path.clone(), source })?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(|source| StorageError::Io { verb: "sync", path: self.root.clone(), source })
    }
}

impl Default for wit::DirListing {
    fn default() -> Self {
        Self { names: String::new(), ends: Vec::new(), sizes: Vec::new(), kinds: Vec::new(), utf8: Vec::new() }
    }
}

/// One entry of a [`wit::DirListing`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedEntry<'a> {
    pub name: &'a str,
    pub utf8: bool,
    pub kind: wit::EntryKind,
    pub size: u64,
}

impl wit::DirListing {
    /// Appends an entry: its name to the names, and each field to its list.
    pub fn push(&mut self, name: &str, utf8: bool, kind: wit::EntryKind, size: u64) {
        self.names.push_str(name);
        self.ends.push(u32::try_from(self.names.len()).expect("a WAL directory listing under 4 GiB of names"));
        self.sizes.push(size);
        self.kinds.push(kind);
        self.utf8.push(utf8);
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The entries, in order. Only a listing built by [`push`](Self::push)
    /// is read here, so every name lies on character boundaries.
    pub fn entries(&self) -> impl Iterator<Item = ListedEntry<'_>> {
        let mut start = 0;
        (0..self.len()).map(move |i| {
            let end = self.ends[i] as usize;
            let name = &self.names[start..end];
            start = end;
            ListedEntry { name, utf8: self.utf8[i], kind: self.kinds[i], size: self.sizes[i] }
        })
    }
}

/// An archive destination: an object store and the key prefix inside it.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    buffers: Arc<BufferPool>,
    /// Read back in ranges (a local or in-memory store), or in one streamed GET (a remote one).
    ranged_readback: bool,
    /// The directory of a `file://` archive, which this archive syncs itself.
    local_root: Option<PathBuf>,
}

/// An upload published under its key, or refused with the reason in its
/// receipt, whose checksum marker is not written yet: see [`Archive::finish_batch`].
#[derive(Debug)]
pub struct Published {
    pub receipt: wit::UploadReceipt,
    /// The marker to write once the object is durable: set when the object
    /// under the key holds exactly the bytes that were read.
    marker: Option<(String, u32, u64)>,
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
        Arc::new(Self {
            permits: Arc::new(tokio::sync::Semaphore::new(size)),
            free: std::sync::Mutex::new(Vec::new()),
            size: size.into(),
        })
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

impl Archive {
    /// The archive URL for a `--to` argument: a URL as given, or a local path
    /// (anything without `://`) as a `file://` URL.
    pub fn url_for(arg: &str) -> Result<String, StorageError> {
        if arg.contains("://") {
            return Ok(arg.to_owned());
        }
        let bad = |why: String| StorageError::BadUrl { url: arg.to_owned(), why };
        let path = std::path::absolute(arg).map_err(|e| bad(e.to_string()))?;
        Url::from_file_path(&path)
            .map(|u| u.to_string())
            .map_err(|()| bad("not a usable local path".into()))
    }

    /// Opens an archive without extra options; see [`Archive::open_with`].
    pub fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_with(url, &[], DEFAULT_REQUEST_RETRIES)
    }

    /// Opens `file://`, `memory://`, `s3://`, `gs://` and `az://` (and the
    /// other URL forms object_store parses for those backends).
    ///
    /// A `file://` archive is a LocalFileSystem rooted at the URL's path,
    /// created if missing, that fsyncs every object and its directory.
    /// Cloud backends read their standard environment variables (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`), then `options` (from the config file), each
    /// key checked: an unknown key is an error naming it, where object_store's
    /// own `parse_url_opts` would ignore it. S3 publishes create-only through
    /// a conditional multipart copy unless `aws_copy_if_not_exists` says otherwise.
    /// `request_retries` bounds object_store's own retries of one request.
    pub fn open_with(url: &str, options: &[(String, String)], request_retries: usize) -> Result<Self, StorageError> {
        let bad = |why: String| StorageError::BadUrl { url: url.to_owned(), why };
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let url = parsed.as_str();
        let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(e.to_string()))?;
        let local_only = |what: &str| -> Result<(), StorageError> {
            match options.first() {
                Some((key, _)) => Err(bad(format!("option {key:?} does not apply to {what} archives"))),
                None => Ok(()),
            }
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => {
                local_only("local")?;
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
                // The archive's own directory must outlive a crash as much as what goes in it.
                for d in dir.ancestors().take(2) {
                    sync_dir_blocking(d).map_err(|e| bad(format!("cannot sync {}: {e}", d.display())))?;
                }
                // This archive syncs what it writes itself, fewer times than
                // object_store's `with_fsync` would: see `finish_batch`.
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?;
                let mut archive = Self::new(Arc::new(fs), "", url);
                archive.local_root = Some(dir);
                return Ok(archive);
            }
            ObjectStoreScheme::Memory => {
                local_only("memory")?;
                Arc::new(object_store::memory::InMemory::new())
            }
            ObjectStoreScheme::AmazonS3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
                let mut b = AmazonS3Builder::new().with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
                for (key, value) in cloud_settings("AWS_", options) {
                    let parsed_key: AmazonS3ConfigKey = key.parse().map_err(|_| unknown_key(url, &key))?;
                    b = b.with_config(parsed_key, value);
                }
                Arc::new(b.with_url(url).with_retry(retry_config(request_retries)).build().map_err(|e| bad(e.to_string()))?)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let mut b = GoogleCloudStorageBuilder::new();
                for (key, value) in cloud_settings("GOOGLE_", options) {
                    let parsed_key: GoogleConfigKey = key.parse().map_err(|_| unknown_key(url, &key))?;
                    b = b.with_config(parsed_key, value);
                }
                Arc::new(b.with_url(url).with_retry(retry_config(request_retries)).build().map_err(|e| bad(e.to_string()))?)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut b = MicrosoftAzureBuilder::new();
                for (key, value) in cloud_settings("AZURE_", options) {
                    let parsed_key: AzureConfigKey = key.parse().map_err(|_| unknown_key(url, &key))?;
                    b = b.with_config(parsed_key, value);
                }
                Arc::new(b.with_url(url).with_retry(retry_config(request_retries)).build().map_err(|e| bad(e.to_string()))?)
            }
            other => {
                return Err(bad(format!(
                    "the {other:?} scheme is not an archive backend; use a local path, file://, s3://, gs://, az:// or memory://"
                )));
            }
        };
        Ok(Self::new(store, path.as_ref(), url))
    }

    /// Opens an archive that must already exist: a local directory is not
    /// created (for verify, restore and prune, a typo must not look like an
    /// empty archive).
    pub fn open_existing(url: &str, options: &[(String, String)], request_retries: usize) -> Result<Self, StorageError> {
        if let Ok(parsed) = Url::parse(url)
            && parsed.scheme() == "file"
            && let Ok(dir) = parsed.to_file_path()
            && !dir.is_dir()
        {
            return Err(StorageError::BadUrl { url: url.to_owned(), why: format!("{} is not a directory", dir.display()) });
        }
        Self::open_with(url, options, request_retries)
    }

    /// Whether `key` is an option of the backend that `url` names. Local
    /// and memory archives take no options.
    pub fn option_is_known(url: &str, key: &str) -> Result<bool, StorageError> {
        use object_store::{aws::AmazonS3ConfigKey, azure::AzureConfigKey, gcp::GoogleConfigKey};
        let bad = |why: String| StorageError::BadUrl { url: url.to_owned(), why };
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (scheme, _) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(e.to_string()))?;
        Ok(match scheme {
            ObjectStoreScheme::AmazonS3 => key.parse::<AmazonS3ConfigKey>().is_ok(),
            ObjectStoreScheme::GoogleCloudStorage => key.parse::<GoogleConfigKey>().is_ok(),
            ObjectStoreScheme::MicrosoftAzure => key.parse::<AzureConfigKey>().is_ok(),
            _ => false,
        })
    }

    /// An archive over a store the caller built (tests, fault injection).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            buffers: BufferPool::new(DEFAULT_BUFFERS),
            ranged_readback: url.starts_with("file:") || url.starts_with("memory:"),
            local_root: None,
        }
    }

    /// The upload buffers, to size them to the uploads that run at once.
    pub fn buffers(&self) -> &BufferPool {
        &self.buffers
    }

    /// The archive's URL, as errors and summaries show it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key prefix inside the store, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The key of a segment, as the planner forms it.
    pub fn key_of(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// A key as a user reads it: the archive URL and the name.
    pub fn display_key(&self, key: &str) -> String {
        let name = key.rsplit('/').next().unwrap_or(key);
        format!("{}/{name}", self.url)
    }

    fn store_err(&self, verb: &'static str, key: &str) -> impl FnOnce(object_store::Error) -> StorageError {
        let url = self.display_key(key);
        move |source| StorageError::Store { verb, url, source }
    }

    /// Streams `file` to `key` and reports what was read and what is stored:
    /// [`Archive::publish`], then [`Archive::finish_batch`] for this one upload.
    pub async fn upload(&self, file: File, path: &Path, key: &str, verify: bool) -> Result<wit::UploadReceipt, StorageError> {
        let published = self.publish(file, path, key, verify).await;
        self.finish_batch(vec![published], 1).await.pop().expect("one upload in, one receipt out")
    }

    /// Streams `file` to `key`, publishes it, and reports what was read and
    /// what is stored; the checksum marker is left to [`Archive::finish_batch`].
    ///
    /// The bytes go to a staging object, which is checked (size, and with
    /// `verify` its CRC32C read back) before it is published with a
    /// create-only copy: an archived object is never overwritten, and a torn
    /// or truncated upload never carries a segment's key. In a local archive
    /// the staged bytes are synced before they are published, so an object
    /// under a key is whole even after a crash. If the key already holds an
    /// object, identical content counts as archived (a retry after a lost
    /// acknowledgement); different content is an error and the object is
    /// left alone.
    pub async fn publish(&self, file: File, path: &Path, key: &str, verify: bool) -> Result<Published, StorageError> {
        let location = self.location(key)?;
        let staging_key = self.staging_key(key);
        let staging = self.location(&staging_key)?;
        let (read_size, read_crc32c) = self.put_streaming(file, path, &staging).await?;
        let published = async {
            let staged_size = self.store.head(&staging).await.map_err(self.store_err("stat", &staging_key))?.size;
            if staged_size != read_size {
                // A store that acknowledged fewer bytes than were sent: never publish it.
                let receipt = wit::UploadReceipt { read_size, read_crc32c, stored_size: staged_size, stored_crc32c: None };
                return Ok(Published { receipt, marker: None });
            }
            let staged_crc = if verify { Some(self.checksum(&staging, &staging_key).await?) } else { None };
            if staged_crc.is_some_and(|c| c != read_crc32c) {
                let receipt = wit::UploadReceipt { read_size, read_crc32c, stored_size: staged_size, stored_crc32c: staged_crc };
                return Ok(Published { receipt, marker: None });
            }
            if let Some(root) = &self.local_root {
                let staged = root.join(&staging_key);
                sync_file(&staged).await.map_err(|source| StorageError::Io { verb: "sync", path: staged, source })?;
            }
            self.copy_create_only(&staging, &location, key, read_size, read_crc32c).await?;
            let stored_size = self.store.head(&location).await.map_err(self.store_err("stat", key))?.size;
            let marker = (stored_size == read_size).then(|| (key.to_owned(), read_crc32c, read_size));
            Ok(Published { receipt: wit::UploadReceipt { read_size, read_crc32c, stored_size, stored_crc32c: staged_crc }, marker })
        }
        .await;
        // The staging object is garbage whatever happened.
        if let Err(e) = self.store.delete(&staging).await {
            tracing::warn!("cannot remove staging object {staging}: {e}");
        }
        published
    }

    /// Makes a batch of published uploads durable, then writes their
    /// checksum markers, so that a marker never names an object a crash can
    /// still take away. In a local archive that is one sync of the segments'
    /// directory for the whole batch (each object's bytes were synced before
    /// it was published), the markers, and one sync of the markers'
    /// directory: two directory syncs a batch where a sync per write cost
    /// five a segment. The caller must not count an upload as archived
    /// before this returns its receipt. An upload whose sync or marker
    /// fails is an error; a retry finds the identical object and goes on.
    pub async fn finish_batch(&self, published: Vec<Result<Published, StorageError>>, concurrency: usize) -> Vec<Result<wit::UploadReceipt, StorageError>> {
        let sync_failed = |dir: &Path, e: &io::Error| StorageError::Io {
            verb: "sync",
            path: dir.to_owned(),
            source: io::Error::new(e.kind(), e.to_string()),
        };
        let mut published = published;
        if let Some(segments_dir) = self.local_dir("")
            && published.iter().any(|p| p.as_ref().is_ok_and(|p| p.marker.is_some()))
            && let Err(e) = sync_dir(&segments_dir).await
        {
            for p in &mut published {
                if p.as_ref().is_ok_and(|p| p.marker.is_some()) {
                    *p = Err(sync_failed(&segments_dir, &e));
                }
            }
        }
        let marked: Vec<(bool, Result<wit::UploadReceipt, StorageError>)> = futures::stream::iter(published)
            .map(|p| async move {
                match p {
                    Ok(Published { receipt, marker: Some((key, crc, size)) }) => {
                        (true, self.put_marker(&key, crc, size).await.map(|()| receipt))
                    }
                    Ok(Published { receipt, marker: None }) => (false, Ok(receipt)),
                    Err(e) => (false, Err(e)),
                }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
        // The markers' directory, and the archive's, which holds its entry.
        let mut marker_sync: Option<(PathBuf, io::Error)> = None;
        if marked.iter().any(|(m, r)| *m && r.is_ok()) {
            for dir in [self.local_dir(CHECKSUM_DIR), self.local_dir("")].into_iter().flatten() {
                if let Err(e) = sync_dir(&dir).await {
                    marker_sync = Some((dir, e));
                    break;
                }
            }
        }
        marked
            .into_iter()
            .map(|(was_marked, r)| match (&marker_sync, was_marked, r) {
                (Some((dir, e)), true, Ok(_)) => Err(sync_failed(dir, e)),
                (_, _, r) => r,
            })
            .collect()
    }

    /// The local directory that holds keys under `sub` (relative to the prefix), for a `file://` archive.
    fn local_dir(&self, sub: &str) -> Option<PathBuf> {
        let root = self.local_root.as_ref()?;
        let mut dir = root.join(&self.prefix);
        if !sub.is_empty() {
            dir.push(sub);
        }
        Some(dir)
    }

    /// The marker key that records `crc` for the segment at `key`.
    fn marker_key(&self, key: &str, crc: u32, size: u64) -> String {
        let name = key.rsplit('/').next().unwrap_or(key);
        self.key_of(&format!("{CHECKSUM_DIR}/{name}{MARKER_INFIX}{crc:08x}-{size}"))
    }

    /// Writes the checksum marker, create-only; one already there is the same fact.
    async fn put_marker(&self, key: &str, crc: u32, size: u64) -> Result<(), StorageError> {
        let marker = self.marker_key(key, crc, size);
        let location = self.location(&marker)?;
        let body = format!("crc32c {crc:08x}\nsize {size}\n");
        match self.store.put_opts(&location, body.into_bytes().into(), PutMode::Create.into()).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.store_err("record the checksum of", key)(e)),
        }
    }

    /// True when a checksum marker records `crc` for the segment at `key`.
    pub async fn has_marker(&self, key: &str, crc: u32, size: u64) -> Result<bool, StorageError> {
        let marker = self.marker_key(key, crc, size);
        match self.store.head(&self.location(&marker)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_err("stat", &marker)(e)),
        }
    }

    /// Lists the segment objects directly under the prefix, in name order,
    /// each with the CRC32C its marker records (none when there is no marker,
    /// or markers disagree).
    pub async fn list(&self) -> Result<Vec<wit::ArchivedObject>, StorageError> {
        let prefix = if self.prefix.is_empty() { None } else { Some(ObjectPath::from(self.prefix.as_str())) };
        let depth = prefix.as_ref().map_or(0, |p| p.parts().count());
        let mut sizes = std::collections::BTreeMap::new();
        let mut marks: std::collections::HashMap<String, Option<(u32, u64)>> = std::collections::HashMap::new();
        let mut stream = self.store.list(prefix.as_ref());
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(self.store_err("list", ""))?;
            let parts: Vec<String> = meta.location.parts().skip(depth).map(|p| p.as_ref().to_owned()).collect();
            match parts.as_slice() {
                [name] => {
                    sizes.insert(name.clone(), meta.size);
                }
                [dir, marker] if dir == CHECKSUM_DIR => {
                    if let Some((name, fields)) = marker.rsplit_once(MARKER_INFIX)
                        && let Some((hex, size)) = fields.split_once('-')
                        && let (Ok(crc), Ok(size)) = (u32::from_str_radix(hex, 16), size.parse::<u64>())
                    {
                        marks
                            .entry(name.to_owned())
                            .and_modify(|c| if *c != Some((crc, size)) { *c = None })
                            .or_insert(Some((crc, size)));
                    }
                }
                _ => {}
            }
        }
        Ok(sizes
            .into_iter()
            .map(|(name, size)| {
                // A marker counts only for an object of the size it records.
                let crc32c = match marks.get(&name).copied().flatten() {
                    Some((crc, marked)) if marked == size => Some(crc),
                    Some((_, marked)) => {
                        tracing::warn!("{} has {size} bytes but its checksum marker records {marked}", self.display_key(&self.key_of(&name)));
                        None
                    }
                    None => None,
                };
                wit::ArchivedObject { name, size, crc32c }
            })
            .collect())
    }

    fn location(&self, key: &str) -> Result<ObjectPath, StorageError> {
        ObjectPath::parse(key).map_err(|e| StorageError::RefusedKey { key: key.to_owned(), expected: e.to_string() })
    }

    /// A staging key unique to this upload, under `{prefix}/_staging/`.
    fn staging_key(&self, key: &str) -> String {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = key.rsplit('/').next().unwrap_or(key);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{name}.{}-{nanos:x}-{n}", std::process::id());
        self.key_of(&format!("{STAGING_DIR}/{token}"))
    }

    /// Streams the file into a multipart upload at `location`.
    async fn put_streaming(&self, file: File, path: &Path, location: &ObjectPath) -> Result<(u64, u32), StorageError> {
        let key = location.as_ref();
        let upload = self.store.put_multipart(location).await.map_err(self.store_err("upload to", key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        match stream_into(&self.buffers, file, path, &mut writer).await {
            Ok(done) => {
                writer.finish().await.map_err(self.store_err("upload to", key))?;
                Ok(done)
            }
            Err(e) => {
                // Best effort: the error that matters is the one already in hand.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Publishes the staging object under `location` unless something is there.
    async fn copy_create_only(&self, staging: &ObjectPath, location: &ObjectPath, key: &str, size: u64, crc: u32) -> Result<(), StorageError> {
        match self.store.copy_if_not_exists(staging, location).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let found_size = self.store.head(location).await.map_err(self.store_err("stat", key))?.size;
                let found_crc = self.checksum(location, key).await?;
                if (found_size, found_crc) == (size, crc) {
                    tracing::info!(to = %self.display_key(key), "already archived with identical content");
                    Ok(())
                } else {
                    Err(StorageError::Conflict {
                        url: self.display_key(key),
                        size,
                        crc,
                        found_size,
                        found_crc,
                    })
                }
            }
            Err(e) => Err(self.store_err("publish", key)(e)),
        }
    }

    /// CRC32C of a stored object, read back in full: from a local or
    /// in-memory store one ranged read of [`READBACK_RANGE`] bytes at a time,
    /// from a remote one as one streamed GET (a request per megabyte would
    /// cost a round trip each). Memory stays flat whatever the object's size.
    pub async fn checksum(&self, location: &ObjectPath, key: &str) -> Result<u32, StorageError> {
        if !self.ranged_readback {
            let got = self.store.get(location).await.map_err(self.store_err("read back", key))?;
            let size = got.meta.size;
            let mut stream = got.into_stream();
            let (mut crc, mut read) = (0u32, 0u64);
            while let Some(bytes) = stream.next().await {
                let bytes = bytes.map_err(self.store_err("read back", key))?;
                crc = crc32c::crc32c_append(crc, &bytes);
                read += bytes.len() as u64;
            }
            if read != size {
                return Err(StorageError::Store {
                    verb: "read back",
                    url: self.display_key(key),
                    source: object_store::Error::Generic {
                        store: "read back",
                        source: format!("{read} bytes read of {size}").into(),
                    },
                });
            }
            return Ok(crc);
        }
        let size = self.store.head(location).await.map_err(self.store_err("stat", key))?.size;
        let mut crc = 0u32;
        let mut offset = 0u64;
        while offset < size {
            let end = (offset + READBACK_RANGE).min(size);
            let bytes = self
                .store
                .get_range(location, offset..end)
                .await
                .map_err(self.store_err("read back", key))?;
            if bytes.is_empty() {
                break;
            }
            crc = crc32c::crc32c_append(crc, &bytes);
            offset += bytes.len() as u64;
        }
        Ok(crc)
    }

    /// Deletes an archived segment, then its checksum markers, so that an
    /// interruption leaves at worst a marker without its object (ignored).
    pub async fn delete_segment(&self, name: &str) -> Result<(), StorageError> {
        WalDir::check_name(name)?;
        let key = self.key_of(name);
        match self.store.delete(&self.location(&key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.store_err("delete", &key)(e)),
        }
        let markers = ObjectPath::from(self.key_of(CHECKSUM_DIR));
        let mut stream = self.store.list(Some(&markers));
        let mut doomed = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(self.store_err("list", CHECKSUM_DIR))?;
            if meta.location.filename().is_some_and(|f| f.starts_with(&format!("{name}{MARKER_INFIX}"))) {
                doomed.push(meta.location);
            }
        }
        for location in doomed {
            match self.store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_err("delete", location.as_ref())(e)),
            }
        }
        Ok(())
    }

    /// Size of the object at `key`, or None if there is none.
    pub async fn stored_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let location = self.location(key)?;
        match self.store.head(&location).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err("stat", key)(e)),
        }
    }
}

/// Reads the file into the multipart writer one pooled buffer at a time,
/// checksumming as it goes. Each buffer is handed to the writer as it is, no
/// copy, and the next chunk is read while the last one is sent.
async fn stream_into(pool: &Arc<BufferPool>, file: File, path: &Path, writer: &mut WriteMultipart) -> Result<(u64, u32), StorageError> {
    let io_err = |source| StorageError::Io { verb: "read", path: path.to_owned(), source };
    let mut file = Some(file);
    let mut size = 0u64;
    let mut crc = 0u32;
    loop {
        let mut chunk = pool.take().await;
        let mut f = file.take().expect("the file is put back after each read");
        let (f, chunk, filled) = tokio::task::spawn_blocking(move || {
            let filled = fill(&mut f, &mut chunk.buf);
            (f, chunk, filled)
        })
        .await
        .map_err(|e| io_err(io::Error::other(e)))?;
        file = Some(f);
        let mut chunk = chunk;
        chunk.len = filled.map_err(io_err)?;
        if chunk.len == 0 {
            break;
        }
        let last = chunk.len < CHUNK;
        crc = crc32c::crc32c_append(crc, chunk.as_ref());
        size += chunk.len as u64;
        writer
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|source| StorageError::Store { verb: "upload", url: path.display().to_string(), source })?;
        writer.put(bytes::Bytes::from_owner(chunk));
        if last {
            break;
        }
    }
    Ok((size, crc))
}

/// Syncs a directory, so that the entries made in it outlive a crash.
fn sync_dir_blocking(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || sync_dir_blocking(&dir)).await.map_err(io::Error::other)?
}

/// Syncs a file's bytes to disk.
async fn sync_file(path: &Path) -> io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || File::open(&path)?.sync_data()).await.map_err(io::Error::other)?
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Size and CRC32C of a local file, read in full.
pub fn checksum_file(mut file: File, path: &Path) -> Result<(u64, u32), StorageError> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok((size, crc)),
            Ok(n) => {
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(StorageError::Io { verb: "read", path: path.to_owned(), source }),
        }
    }
}

/// The environment's settings for one backend (`AWS_…` lowercased, as the
/// builders' `from_env` reads them; unknown ones are left alone, since the
/// environment is shared with other tools), then the config file's options.
fn cloud_settings(env_prefix: &str, options: &[(String, String)]) -> Vec<(String, String)> {
    let from_env = std::env::vars().filter(|(k, _)| k.starts_with(env_prefix)).map(|(k, v)| (k.to_ascii_lowercase(), v));
    // The environment is shared with other tools: keys this backend does not
    // know are left alone there, while the config file's are checked.
    let mut out: Vec<(String, String)> = from_env.filter(|(k, _)| known_env_key(env_prefix, k)).collect();
    out.extend(options.iter().cloned());
    out
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
    StorageError::BadUrl { url: url.to_owned(), why: format!("unknown storage option {key:?}") }
}

/// object_store's own retries for one request: few and quick, because the
/// archiver retries whole segments itself, with backoff, and counts them.
fn retry_config(max_retries: usize) -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(2),
            base: 2.0,
        },
        max_retries,
        retry_timeout: std::time::Duration::from_secs(30),
    }
}

/// The storage imports: a WAL directory and an archive, on a tokio runtime.
#[derive(Debug, Clone)]
pub struct Storage {
    pub wal: WalDir,
    pub archive: Archive,
    pub runtime: Handle,
}

impl Storage {
    pub fn list_wal_dir(&self) -> Result<wit::DirListing, wit::StorageError> {
        self.wal.list().map_err(Into::into)
    }

    pub fn upload(&self, name: &str, key: &str, verify: bool) -> Result<wit::UploadReceipt, wit::StorageError> {
        self.upload_segment(name, key, verify).map_err(Into::into)
    }

    pub fn delete_segment(&self, name: &str) -> Result<(), wit::StorageError> {
        self.delete_archived(name).map_err(Into::into)
    }

    /// Uploads one segment after checking that `key` is its key in this archive.
    pub fn upload_segment(&self, name: &str, key: &str, verify: bool) -> Result<wit::UploadReceipt, StorageError> {
        self.runtime.block_on(self.upload_segment_async(name, key, verify))
    }

    /// [`Storage::upload_segment`], for running several at once.
    pub async fn upload_segment_async(&self, name: &str, key: &str, verify: bool) -> Result<wit::UploadReceipt, StorageError> {
        let published = self.publish_segment(name, key, verify).await;
        self.archive.finish_batch(vec![published], 1).await.pop().expect("one upload in, one receipt out")
    }

    /// Publishes one segment after checking that `key` is its key in this
    /// archive; [`Archive::finish_batch`] makes it count.
    pub async fn publish_segment(&self, name: &str, key: &str, verify: bool) -> Result<Published, StorageError> {
        let path = self.wal.entry_path(name)?;
        let expected = self.archive.key_of(name);
        if key != expected {
            return Err(StorageError::RefusedKey { key: key.to_owned(), expected });
        }
        let file = self.wal.open_segment(name)?;
        self.archive.publish(file, &path, key, verify).await
    }

    pub fn list_archive(&self) -> Result<Vec<wit::ArchivedObject>, wit::StorageError> {
        self.archive_listing().map_err(Into::into)
    }

    /// The archive's segment objects and their recorded checksums.
    pub fn archive_listing(&self) -> Result<Vec<wit::ArchivedObject>, StorageError> {
        self.runtime.block_on(self.archive.list())
    }

    /// Reads part of an archived segment, by its name; at most one part at a time.
    pub fn read_object(&self, name: &str, offset: u64, length: u32) -> Result<Vec<u8>, wit::StorageError> {
        self.wal.entry_path(name).map_err(wit::StorageError::from)?;
        let key = self.archive.key_of(name);
        let location = ObjectPath::parse(&key).map_err(|e| wit::StorageError::Refused(format!("refused key {key:?}: {e}")))?;
        let end = offset.saturating_add(u64::from(length).min(CHUNK as u64));
        self.runtime
            .block_on(self.archive.store().get_range(&location, offset..end))
            .map(|b| b.to_vec())
            .map_err(|e| StorageError::Store { verb: "read", url: self.archive.display_key(&key), source: e }.into())
    }

    /// Deletes a local segment, but only once the archive holds an object of
    /// the same size under its key and a checksum marker with the local file's
    /// CRC32C: a last check by the host, whatever the planner said.
    pub fn delete_archived(&self, name: &str) -> Result<(), StorageError> {
        let path = self.wal.entry_path(name)?;
        let file = self.wal.open_segment(name)?;
        let (want, crc) = checksum_file(file, &path)?;
        let key = self.archive.key_of(name);
        let found = self.runtime.block_on(self.archive.stored_size(&key))?;
        let marked = found == Some(want) && self.runtime.block_on(self.archive.has_marker(&key, crc, want))?;
        if !marked {
            return Err(StorageError::NotArchived {
                path,
                url: self.archive.display_key(&key),
                found: found.unwrap_or(0),
                want,
                crc,
            });
        }
        self.wal.remove_segment(name)
    }
}
