//! The host's storage: the WAL directory and the archive together, as the
//! archive loop and the storage imports use them, and the errors of both.
//!
//! Every name the planner hands over must be a single entry directly inside
//! the WAL directory, and every key must be `{prefix}/{that name}` (with `.zst` for a compressed object).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;

use crate::bindings::wit;
use crate::store::Archive;
use crate::wal::{Stat, WalDir};

/// Why a storage operation failed. Each variant names the file or object;
/// each cause is printed once (a cause is part of the message and never
/// also a `source` that `{:#}` would print again).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot use WAL directory {}: {cause}", path.display())]
    WalDir { path: PathBuf, cause: io::Error },
    #[error("refused name {name:?}: {why}")]
    RefusedName { name: String, why: &'static str },
    #[error("refused key {key:?}: it is not {expected:?}")]
    RefusedKey { key: String, expected: String },
    #[error("cannot read {}: not found", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("cannot {verb} {}: {cause}", path.display())]
    Io { verb: &'static str, path: PathBuf, cause: io::Error },
    #[error("cannot {verb} {url}: {}", crate::store::describe(cause))]
    Store { verb: &'static str, url: String, cause: object_store::Error },
    #[error("cannot archive {}: {why}; nothing was published, it is tried again later", path.display())]
    Changed { path: PathBuf, why: String },
    #[error(
        "cannot {verb} {url}: the archive holds a different object there ({archived_size} bytes, CRC32C {archived_crc:08x}; \
         the local segment has {local_size} bytes, CRC32C {local_crc:08x}); it was left untouched"
    )]
    Conflict { verb: &'static str, url: String, name: String, local_size: u64, local_crc: u32, archived_size: u64, archived_crc: u32 },
    #[error("cannot {verb} {url}: the archive holds no object there")]
    Missing { verb: &'static str, url: String },
    #[error("cannot decode {url}: {why}")]
    Undecodable { url: String, why: String },
    #[error("cannot open archive {url}: {why}")]
    BadUrl { url: String, why: String },
}

impl StorageError {
    /// The conflict this error reports, for the planner.
    pub fn conflict(&self) -> Option<wit::SegmentConflict> {
        match self {
            StorageError::Conflict { name, local_size, local_crc, archived_size, archived_crc, .. } => Some(wit::SegmentConflict {
                name: name.clone(),
                local_size: *local_size,
                local_crc32c: *local_crc,
                archived_size: *archived_size,
                archived_crc32c: *archived_crc,
            }),
            _ => None,
        }
    }
}

impl From<StorageError> for wit::StorageError {
    fn from(e: StorageError) -> Self {
        if let Some(c) = e.conflict() {
            return Self::Conflict(c);
        }
        let text = e.to_string();
        match e {
            StorageError::RefusedName { .. } | StorageError::RefusedKey { .. } => Self::Refused(text),
            StorageError::NotFound { .. } | StorageError::Missing { .. } => Self::NotFound(text),
            StorageError::NotAFile { .. } => Self::NotAFile(text),
            StorageError::Changed { .. } => Self::Changed(text),
            _ => Self::Io(text),
        }
    }
}

/// What this process proved about a local segment and its archived copy:
/// the file (as `fstat` saw it) held `crc`, and so did the object under its
/// key. A delete may rely on it while the file is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proof {
    stat: Stat,
    crc: u32,
    key: String,
}

/// The WAL directory and the archive, on a tokio runtime: what the archive
/// loop and the storage imports work on.
#[derive(Debug, Clone)]
pub struct Storage {
    pub wal: WalDir,
    pub archive: Archive,
    pub runtime: Handle,
    proofs: Arc<Mutex<HashMap<String, Proof>>>,
    /// Object names a conflict in the state was about when the planner's
    /// `run-cycle` began: `check-archived` reads those back (see
    /// [`Storage::check_archived_reading`]).
    disputed: Arc<Mutex<HashSet<String>>>,
}

impl Storage {
    pub fn new(wal: WalDir, archive: Archive, runtime: Handle) -> Self {
        Self { wal, archive, runtime, proofs: Arc::default(), disputed: Arc::default() }
    }

    /// Sets the objects that `check-archived` through the storage imports
    /// reads back: those the state's conflicts are about.
    pub fn set_disputed(&self, names: impl IntoIterator<Item = String>) {
        *self.disputed.lock().expect("disputed lock") = names.into_iter().collect();
    }

    /// True when `key` is of an object set by [`Storage::set_disputed`].
    pub fn is_disputed(&self, key: &str) -> bool {
        let object = key.rsplit('/').next().unwrap_or(key);
        self.disputed.lock().expect("disputed lock").contains(object)
    }

    /// Checks that `key` is one of `name`'s keys in this archive: the key of
    /// its plain object, or of its compressed one.
    fn check_key(&self, name: &str, key: &str) -> Result<(), StorageError> {
        WalDir::check_name(name)?;
        let expected = self.archive.key_of(name);
        if key != expected && key.strip_suffix(crate::compress::ZSTD_SUFFIX) != Some(expected.as_str()) {
            return Err(StorageError::RefusedKey { key: key.to_owned(), expected: format!("{expected}[{}]", crate::compress::ZSTD_SUFFIX) });
        }
        Ok(())
    }

    fn remember(&self, name: &str, key: &str, stat: Stat, crc: u32) {
        self.proofs.lock().expect("proof lock").insert(name.to_owned(), Proof { stat, crc, key: key.to_owned() });
    }

    /// Publishes one segment, listed with `size` bytes, under `key`;
    /// [`Archive::finish_batch`] then makes it count.
    pub async fn publish_segment(&self, name: &str, key: &str, size: u64, verify: bool) -> Result<crate::store::Published, StorageError> {
        self.check_key(name, key)?;
        let file = self.wal.open_segment(name)?;
        self.archive.publish(&file, key, size, verify).await
    }

    /// Makes a batch of published uploads count ([`crate::store::Archive::finish_batch`]),
    /// and remembers each verified one as this process's own proof.
    pub async fn finish_batch(
        &self,
        published: Vec<Result<crate::store::Published, StorageError>>,
        concurrency: usize,
    ) -> Vec<Result<wit::UploadReceipt, StorageError>> {
        let read: Vec<Option<(String, String, Stat)>> =
            published.iter().map(|p| p.as_ref().ok().map(|p| (p.name.clone(), p.key.clone(), p.read_from))).collect();
        let receipts = self.archive.finish_batch(published, concurrency).await;
        for (r, read) in receipts.iter().zip(read) {
            if let (Ok(r), Some((name, key, stat))) = (r, read)
                && r.stored_crc32c == Some(r.read_crc32c)
            {
                self.remember(&name, &key, stat, r.read_crc32c);
            }
        }
        receipts
    }

    /// Uploads one segment and makes it durable: `upload` of the storage imports.
    pub async fn upload_segment(&self, name: &str, key: &str, size: u64, verify: bool) -> Result<wit::UploadReceipt, StorageError> {
        let published = self.publish_segment(name, key, size, verify).await;
        self.finish_batch(vec![published], 1).await.pop().expect("one upload in, one receipt out")
    }

    /// Compares a local segment with the object under its key, without
    /// sending it: `check-archived` of the storage imports.
    pub async fn check_archived(&self, name: &str, key: &str, size: u64) -> Result<wit::UploadReceipt, StorageError> {
        self.check_archived_reading(name, key, size, false).await
    }

    /// [`Storage::check_archived`], reading the object back even where a
    /// checksum record agrees when `read_back` (an object a conflict was
    /// about: the record may be older than what the conflict found).
    pub async fn check_archived_reading(&self, name: &str, key: &str, size: u64, read_back: bool) -> Result<wit::UploadReceipt, StorageError> {
        self.check_key(name, key)?;
        let file = self.wal.open_segment(name)?;
        let (receipt, read_back) = self.archive.compare(&file, key, size, read_back).await?;
        // A checksum record is evidence of the past: only a read-back proves now.
        if read_back {
            self.remember(name, key, file.opened, receipt.read_crc32c);
        }
        Ok(receipt)
    }

    /// Deletes a local segment once the object under its key is proved to
    /// hold the local file's bytes now: by this process's own proof for the
    /// same unchanged file, or by reading both again.
    pub async fn delete_archived(&self, name: &str, key: &str) -> Result<(), StorageError> {
        self.check_key(name, key)?;
        let file = self.wal.open_segment(name)?;
        let proof = self.proofs.lock().expect("proof lock").get(name).cloned();
        let proved = match proof {
            Some(p) if p.stat == file.opened && p.key == key => {
                file.check_unchanged(p.stat.size, None)?;
                true
            }
            _ => false,
        };
        if !proved {
            let (size, crc) = file.checksum(None)?;
            self.archive.prove(key, size, crc).await?;
        }
        self.proofs.lock().expect("proof lock").remove(name);
        self.wal.remove_segment(name)
    }

    /// Records the archive's chain start.
    pub async fn record_chain_start(&self, start: u64) -> Result<(), StorageError> {
        self.archive.record(crate::store::Record::ChainStart, start).await
    }

    /// The archive's listing, for the planner.
    pub async fn list_archive(&self) -> Result<wit::ArchiveListing, StorageError> {
        Ok(self.archive.list().await?.to_wit())
    }
}
