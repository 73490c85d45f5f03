//! A local archive: a directory of our own making, where object_store's
//! LocalFileSystem falls short (it hides objects named `x#1`, stops listing
//! at a name it cannot encode, follows symlinks, and copies through user
//! space).
//!
//! A segment is published in two halves. [`LocalDir::stage`]: the kernel
//! copies it (`copy_file_range`, or read and write where the filesystem
//! cannot) into a file without a name in the archive's directory
//! (`O_TMPFILE`; where the filesystem has no such files, a new name under
//! `_staging/`); the copy's CRC32C is computed by reading it back (from the
//! page cache, just written); the source is checked unchanged (`fstat` on
//! its descriptor: size and modification time). Then, for a whole batch at
//! once, [`LocalDir::publish_staged`]: every copy's data is synced (the
//! syncs run side by side, so that the filesystem can commit them
//! together), each copy is given its key with `link`, which fails if
//! anything is there (create-only), and the archive's directory is synced
//! once. The caller writes the checksum records only after that, and syncs
//! their directory once. A crash before the link leaves nothing behind: an
//! unnamed file vanishes with its last descriptor.
//!
//! What "verified" means here: the object under the key was copied from the
//! segment's open descriptor while it did not change, holds as many bytes,
//! and its CRC32C, read back from the copy itself, equals the segment's own,
//! summed from the same descriptor (the kernel copies unseen: a copy it or
//! the filesystem got wrong is found before it is published); that CRC32C
//! is the one recorded, and its data was synced before it got its key. The read-back comes from the
//! page cache: a disk that later returns other bytes is found by
//! `verify --deep`, which reads every object back.
//! Nothing here follows a symlink: listings report symlinks as strays, and
//! every file is opened with `O_NOFOLLOW`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::stream::BoxStream;

use super::{PutError, CHAIN_DIR, CHECKSUM_DIR, CONFLICT_DIR, STAGING_DIR};
use crate::compress::{Source, Sum, Sums};
use crate::bindings::wit;
use crate::storage::StorageError;
use crate::wal::{kind_of, sync_dir, SegmentFile};

/// Data syncs of one batch in flight at once.
const SYNCS_IN_FLIGHT: usize = 16;

/// A copy, checked, waiting to be published.
#[derive(Debug)]
pub(super) struct Copy {
    tmp: Tmp,
    pub(super) dest: PathBuf,
    /// The object's bytes, read back from the copy.
    pub(super) size: u64,
    pub(super) crc: u32,
    /// The file's bytes the copy holds: the same as the object's for a
    /// plain copy; for a compressed one, what it decodes to.
    pub(super) read: Sum,
}

/// Where a copy waits: a file without a name in the archive's directory
/// (`O_TMPFILE`: nothing to clean up after a crash, no name made and
/// removed per segment), or, where the filesystem has no such files, a
/// named file under `_staging/`.
#[derive(Debug)]
struct Tmp {
    file: File,
    /// Its name under `_staging/`, if it has one.
    named: Option<PathBuf>,
}

impl Tmp {
    /// The copy, as errors name it: its staging name, or for an unnamed
    /// file, the key it is for (where nothing is yet), said as such.
    fn shown(&self, dest: &Path) -> PathBuf {
        self.named.clone().unwrap_or_else(|| {
            let mut shown = dest.as_os_str().to_owned();
            shown.push(" (its copy, not linked yet)");
            PathBuf::from(shown)
        })
    }

    fn discard(&self) {
        if let Some(path) = &self.named
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!("cannot remove staging file {}: {e}", path.display());
        }
    }
}

/// A copy made in a staging file: the file, the object's size and CRC32C as
/// read back, the file's bytes it holds (summed from the file), and whether
/// `_staging/` was made for it.
type StagedCopy = (Tmp, u64, u32, Sum, bool);

/// What staging a segment gave.
#[derive(Debug)]
pub(super) enum Staged {
    Copy(Copy),
    /// Something was already under the key: nothing was staged.
    Existing,
}

/// The archive's own sub-folders: listed for their records, never as entries.
const OWN_DIRS: [&str; 4] = [CHECKSUM_DIR, CHAIN_DIR, CONFLICT_DIR, STAGING_DIR];
/// Bytes read at a time when reading an object back or streaming it.
const READ_CHUNK: usize = 1 << 20;

/// A local archive directory.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    /// False once the filesystem or the system refused an unnamed file
    /// (no `O_TMPFILE`, or no `/proc` to link one through): copies are then
    /// staged under `_staging/`.
    unnamed: AtomicBool,
    /// True once `_staging/` is known to exist: made once, not per segment.
    staging_made: AtomicBool,
    /// Folders made for records (`_checksums/`, `_chain/`, `_conflicts/`),
    /// counted, and how many of them the archive's directory was last synced
    /// after: until it is synced again, a power cut could take a new folder
    /// with every record in it, so the next sync of records syncs it too.
    folders_made: std::sync::Arc<AtomicU64>,
    folders_synced: AtomicU64,
    /// The archive directory's own modification time, read after it was
    /// synced as it was opened: an entry whose change time is older was
    /// linked before that sync, and its name is durable already. Both times
    /// come from the filesystem's clock, not this machine's.
    synced_at_open: Option<std::time::SystemTime>,
    /// Opened to look at, and not there: lists as empty.
    absent: bool,
}

fn io_at<'a>(verb: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |cause| StorageError::Io { verb, path: path.to_owned(), cause }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blocking archive task panicked")
}

impl LocalDir {
    /// Opens the archive directory; with `create`, makes it (and syncs it
    /// and its parent, so that it outlives a crash as much as what goes in).
    pub fn open(root: &Path, create: bool) -> Result<Self, StorageError> {
        let mut synced_at_open = None;
        if create {
            std::fs::create_dir_all(root).map_err(io_at("create", root))?;
            for d in root.ancestors().take(2) {
                sync_dir(d).map_err(io_at("sync", d))?;
            }
            // Linking an entry sets both its change time and the directory's
            // modification time: what was linked before this sync is not
            // newer than the directory is now.
            synced_at_open = std::fs::symlink_metadata(root).and_then(|m| m.modified()).ok();
        }
        match std::fs::symlink_metadata(root) {
            Ok(m) if m.is_dir() => Ok(Self {
                root: root.to_owned(),
                // An unnamed file is linked through /proc: without it, names.
                unnamed: AtomicBool::new(Path::new("/proc/self/fd").is_dir()),
                staging_made: AtomicBool::new(false),
                folders_made: Default::default(),
                folders_synced: AtomicU64::new(0),
                synced_at_open,
                absent: false,
            }),
            Ok(_) => Err(StorageError::Io {
                verb: "use archive",
                path: root.to_owned(),
                cause: io::Error::new(io::ErrorKind::NotADirectory, "not a directory (a symlink is not followed)"),
            }),
            Err(cause) => Err(StorageError::Io { verb: "use archive", path: root.to_owned(), cause }),
        }
    }

    /// A directory that is not there, to look at (status before the first
    /// run): it lists as empty while it is missing, and nothing makes it.
    pub fn absent(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            unnamed: AtomicBool::new(false),
            staging_made: AtomicBool::new(false),
            folders_made: Default::default(),
            folders_synced: AtomicU64::new(0),
            synced_at_open: None,
            absent: true,
        }
    }

    /// True when opened as [`LocalDir::absent`].
    pub fn is_absent(&self) -> bool {
        self.absent
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a key: each part a plain name, never `..` or empty.
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let mut path = self.root.clone();
        for part in key.split('/') {
            if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
                return Err(StorageError::RefusedKey { key: key.to_owned(), expected: "a key of plain names".into() });
            }
            path.push(part);
        }
        Ok(path)
    }

    /// Every entry directly inside the archive, and every entry of its own
    /// sub-folders, by its parts: never stopping at a name, never following
    /// a link.
    pub async fn list(&self) -> Result<Vec<(Vec<String>, bool, wit::EntryKind, u64)>, (PathBuf, io::Error)> {
        let (root, absent) = (self.root.clone(), self.absent);
        blocking(move || {
            let mut out = Vec::new();
            if absent && std::fs::symlink_metadata(&root).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
                return Ok(out);
            }
            list_dir(&root, None, &mut out)?;
            for dir in OWN_DIRS {
                let path = root.join(dir);
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => list_dir(&path, Some(dir), &mut out)?,
                    _ => {}
                }
            }
            Ok(out)
        })
        .await
    }

    /// Copies the segment open in `file` to a file without a name in the
    /// archive's directory (or under `_staging/`) and checks the source
    /// unchanged; see the module docs. Nothing is published yet.
    pub(super) async fn stage(&self, file: &SegmentFile, key: &str, size: u64, level: Option<i32>) -> Result<Staged, StorageError> {
        let dest = self.path(key)?;
        let src = file.file.try_clone().map_err(io_at("read", &file.path))?;
        let (src_path, name, root) = (file.path.clone(), file.name.clone(), self.root.clone());
        let (unnamed, staging_made) = (self.unnamed.load(Ordering::Relaxed), self.staging_made.load(Ordering::Relaxed));
        let dest2 = dest.clone();
        let staged = blocking(move || -> Result<Option<StagedCopy>, StorageError> {
            if std::fs::symlink_metadata(&dest2).is_ok() {
                return Ok(None);
            }
            let (mut tmp, made) = create_tmp(&root, &name, unnamed, staging_made)?;
            let copied = (|| {
                let tmp_path = tmp.shown(&dest2);
                let (n, read) = match level {
                    None => {
                        let n = copy(&src, &src_path, &mut tmp.file, &tmp_path)?;
                        // The file's own bytes, summed from its descriptor:
                        // the kernel copied them unseen, and a copy it or the
                        // filesystem got wrong (zeros where data was) must
                        // not be published with a record of its own.
                        let (size, crc) = crate::wal::checksum_reader(&src, &src_path)?;
                        if size != n {
                            return Err(StorageError::Changed {
                                path: src_path.clone(),
                                why: format!("{n} bytes were copied but it has {size}"),
                            });
                        }
                        (n, Sums { read: Sum { size, crc }, object: Sum { size, crc } })
                    }
                    Some(level) => {
                        let sums = pack(src, &src_path, level, &mut tmp.file, &tmp_path)?;
                        (sums.object.size, sums)
                    }
                };
                // The disk starts writing the copy now, while other copies
                // are made, instead of all at the batch's sync. Only a hint:
                // the sync before the link is what counts, and reports.
                // SAFETY: a plain call on a descriptor this function holds.
                unsafe { libc::sync_file_range(tmp.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
                let (read_back, crc) = crate::wal::checksum_reader(&tmp.file, &tmp_path)?;
                // The copy holds what was made: the file's bytes, or for a
                // compressed one, bytes that were checked to decode to them.
                let made_crc = read.object.crc;
                if read_back != n || crc != made_crc {
                    return Err(StorageError::Io {
                        verb: "read back",
                        path: tmp_path,
                        cause: io::Error::other(format!(
                            "{n} bytes with CRC32C {made_crc:08x} were written but {read_back} with CRC32C {crc:08x} read back"
                        )),
                    });
                }
                Ok((n, crc, read.read))
            })();
            match copied {
                Ok((n, crc, read)) => Ok(Some((tmp, n, crc, read, made))),
                Err(e) => {
                    tmp.discard();
                    Err(e)
                }
            }
        })
        .await
        // A file that changed while it was copied fails as changed (tried
        // again later), whatever else that made go wrong.
        .map_err(|e| match file.check_unchanged(file.opened.size, None) {
            Err(changed @ StorageError::Changed { .. }) => changed,
            _ => e,
        })?;
        let Some((tmp, copied, crc, read, made)) = staged else {
            return Ok(Staged::Existing);
        };
        if tmp.named.is_some() {
            self.unnamed.store(false, Ordering::Relaxed);
        }
        if made {
            self.staging_made.store(true, Ordering::Relaxed);
        }
        // The source must be as it was: else nothing carries the key.
        if let Err(e) = file.check_unchanged(read.size, Some(size)) {
            tmp.discard();
            return Err(e);
        }
        Ok(Staged::Copy(Copy { tmp, dest, size: copied, crc, read }))
    }

    /// Publishes a batch of staged copies: syncs their data, links each under
    /// its key (create-only), removes the staging names, and syncs the
    /// archive's directory once. For each copy: published, or `false` when
    /// something got under the key first, or why it failed.
    pub(super) async fn publish_staged(&self, copies: Vec<Copy>) -> Vec<Result<bool, StorageError>> {
        use futures::StreamExt;
        let root = self.root.clone();
        // Side by side, so that the filesystem can commit them together.
        // Each copy's own data sync, not one `syncfs`: on FUSE and network
        // filesystems only a file's own sync is sure to reach the storage.
        let copies: Vec<(Copy, Result<(), StorageError>)> = futures::stream::iter(copies)
            .map(|c| {
                blocking(move || {
                    let synced = c.tmp.file.sync_data().map_err(io_at("sync", &c.tmp.shown(&c.dest)));
                    (c, synced)
                })
            })
            .buffered(SYNCS_IN_FLIGHT)
            .collect()
            .await;
        blocking(move || {
            let mut out = Vec::with_capacity(copies.len());
            for (c, synced) in copies {
                let linked = synced.and_then(|()| match link_tmp(&c.tmp, &c.dest) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(cause) => Err(StorageError::Io { verb: "publish", path: c.dest.clone(), cause }),
                });
                c.tmp.discard();
                out.push(linked);
            }
            if out.iter().any(|r| matches!(r, Ok(true)))
                && let Err(cause) = sync_dir(&root)
            {
                // The links may not outlive a crash: none of them counts.
                for r in &mut out {
                    if matches!(r, Ok(true)) {
                        *r = Err(StorageError::Io { verb: "sync", path: root.clone(), cause: io::Error::new(cause.kind(), cause.to_string()) });
                    }
                }
            }
            out
        })
        .await
    }

    /// Makes an object that is already there durable before it counts: its
    /// bytes, and its name in its directory. It may be one whose publishing
    /// was cut short (its directory's sync failed, or the archiver was
    /// killed before it), or another archiver's, not synced yet.
    pub(super) async fn sync_object(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let synced_at_open = self.synced_at_open;
        blocking(move || {
            let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(io_at("open", &path))?;
            file.sync_all().map_err(io_at("sync", &path))?;
            // Its name: durable already when it was linked (its change time)
            // before the directory's last change seen at open, synced then,
            // as after a lost state, where thousands of objects are
            // compared; else (and on a tie) synced now.
            use std::os::unix::fs::MetadataExt;
            let meta = file.metadata().map_err(io_at("stat", &path))?;
            let linked = std::time::UNIX_EPOCH + std::time::Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().clamp(0, 999_999_999) as u32);
            if synced_at_open.is_some_and(|at| linked < at) {
                return Ok(());
            }
            let dir = path.parent().unwrap_or(&path);
            sync_dir(dir).map_err(io_at("sync", dir))
        })
        .await
    }

    /// Removes the files under `_staging/` of this archiver's naming that
    /// `stale` says are old enough (by their modification time). Symlinks
    /// and other entries are left alone.
    pub(super) async fn remove_staging_leftovers(
        &self,
        stale: impl Fn(std::time::SystemTime) -> bool + Send + 'static,
    ) -> Result<Vec<String>, StorageError> {
        let staging = self.root.join(STAGING_DIR);
        blocking(move || {
            let entries = match std::fs::read_dir(&staging) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(cause) => return Err(StorageError::Io { verb: "list", path: staging, cause }),
            };
            let mut removed = Vec::new();
            for entry in entries {
                let entry = entry.map_err(io_at("list", &staging))?;
                let Ok(name) = entry.file_name().into_string() else { continue };
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
                if !meta.file_type().is_file() || !super::is_own_staging_name(&name) || !meta.modified().is_ok_and(&stale) {
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => removed.push(name),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(cause) => return Err(StorageError::Io { verb: "remove", path, cause }),
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Writes a small object, create-only, its bytes synced.
    pub(super) async fn put_create(&self, key: &str, body: &[u8]) -> Result<(), PutError> {
        let path = self.path(key).map_err(PutError::Failed)?;
        let body = body.to_vec();
        let folders_made = self.folders_made.clone();
        blocking(move || {
            let create = || OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).open(&path);
            // The folder is made when the first record finds it missing, not
            // tried again for every record.
            let created = match (create(), path.parent()) {
                (Err(e), Some(parent)) if e.kind() == io::ErrorKind::NotFound => {
                    // Counted before the folder exists: whoever finds it
                    // there also finds it counted, and syncs its name.
                    folders_made.fetch_add(1, Ordering::SeqCst);
                    match std::fs::create_dir_all(parent) {
                        Ok(()) => create(),
                        Err(e) => return Err(PutError::Failed(io_at("create", parent)(e))),
                    }
                }
                (created, _) => created,
            };
            match created {
                Ok(mut f) if !body.is_empty() => {
                    f.write_all(&body).and_then(|()| f.sync_data()).map_err(|e| PutError::Failed(io_at("write", &path)(e)))
                }
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(PutError::Exists),
                Err(e) => Err(PutError::Failed(io_at("create", &path)(e))),
            }
        })
        .await
    }

    /// Syncs the directory `sub` (the archive itself for ""), so that the
    /// entries made in it outlive a crash.
    pub async fn sync(&self, sub: &str) -> Result<(), (PathBuf, io::Error)> {
        let dir = if sub.is_empty() { self.root.clone() } else { self.root.join(sub) };
        blocking(move || match sync_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir.file_name().is_some() => Ok(()),
            Err(e) => Err((dir, e)),
        })
        .await?;
        // A folder made for records since: its name, in the archive's
        // directory, before the records in it count. Only a sync that began
        // after a folder was made covers it; concurrent callers each sync.
        let made = self.folders_made.load(Ordering::SeqCst);
        if !sub.is_empty() && made > self.folders_synced.load(Ordering::SeqCst) {
            let root = self.root.clone();
            blocking(move || sync_dir(&root).map_err(|e| (root, e))).await?;
            self.folders_synced.fetch_max(made, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Size of the regular file at `key`, or None if there is none (a
    /// symlink or directory there is no object).
    pub(super) async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path(key)?;
        blocking(move || match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(cause) => Err(StorageError::Io { verb: "stat", path, cause }),
        })
        .await
    }

    fn open_object(&self, key: &str) -> Result<File, StorageError> {
        let path = self.path(key)?;
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path).map_err(|cause| match cause.raw_os_error() {
            Some(libc::ENOENT) => StorageError::Missing { verb: "read", url: path.display().to_string() },
            Some(libc::ELOOP) => StorageError::NotAFile { path: path.clone() },
            _ => StorageError::Io { verb: "read", path: path.clone(), cause },
        })
    }

    /// Size and CRC32C of the object at `key`, read back in full.
    pub(super) async fn checksum(&self, key: &str) -> Result<(u64, u32), StorageError> {
        let file = self.open_object(key)?;
        let path = self.path(key)?;
        blocking(move || crate::wal::checksum_reader(&file, &path)).await
    }

    /// The object's bytes, a chunk at a time.
    pub(super) async fn read(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        use futures::StreamExt;
        let file = std::sync::Arc::new(self.open_object(key)?);
        let path = self.path(key)?;
        let stream = futures::stream::unfold(Some(0u64), move |offset| {
            let (file, path) = (file.clone(), path.clone());
            async move {
                let offset = offset?;
                let read = blocking(move || {
                    let mut buf = vec![0u8; READ_CHUNK];
                    loop {
                        match file.read_at(&mut buf, offset) {
                            Ok(n) => {
                                buf.truncate(n);
                                return Ok(buf);
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(cause) => {
                                return Err(StorageError::Io { verb: "read", path, cause });
                            }
                        }
                    }
                })
                .await;
                match read {
                    Ok(buf) if buf.is_empty() => None,
                    Ok(buf) => {
                        let next = offset + buf.len() as u64;
                        Some((Ok(Bytes::from(buf)), Some(next)))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            }
        });
        Ok(stream.boxed())
    }

    /// Deletes the object at `key` and syncs its directory; one already gone is fine.
    pub(super) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(cause) => {
                    return Err(StorageError::Io { verb: "delete", path, cause });
                }
            }
            let dir = path.parent().unwrap_or(Path::new("/"));
            sync_dir(dir).map_err(io_at("sync", dir))
        })
        .await
    }
}

/// Lists one directory's entries, without following links, as parts
/// (`[name]`, or `[sub, name]` inside a sub-folder of the archive's own).
fn list_dir(dir: &Path, sub: Option<&str>, out: &mut Vec<(Vec<String>, bool, wit::EntryKind, u64)>) -> Result<(), (PathBuf, io::Error)> {
    let err = |e| (dir.to_owned(), e);
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name: OsString = entry.file_name();
        if sub.is_none() && OWN_DIRS.iter().any(|d| name == *d) {
            continue;
        }
        let meta = match entry.path().symlink_metadata() {
            Ok(m) => m,
            // Gone between readdir and lstat: not there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(e)),
        };
        let (kind, size) = kind_of(&meta);
        let (name, utf8) = match name.into_string() {
            Ok(s) => (s, true),
            Err(raw) => (raw.to_string_lossy().into_owned(), false),
        };
        let parts = match sub {
            Some(s) => vec![s.to_owned(), name],
            None => vec![name],
        };
        out.push((parts, utf8, kind, size));
    }
    Ok(())
}

/// Makes the file a copy waits in: an unnamed one in `root` when `unnamed`
/// and the filesystem has them, else a new name under `_staging/` (made
/// unless `staging_made`). Also says whether it made `_staging/`.
fn create_tmp(root: &Path, name: &str, unnamed: bool, staging_made: bool) -> Result<(Tmp, bool), StorageError> {
    if unnamed {
        match OpenOptions::new().read(true).write(true).mode(0o644).custom_flags(libc::O_TMPFILE).open(root) {
            Ok(file) => return Ok((Tmp { file, named: None }, false)),
            // No unnamed files on this filesystem (or this kernel): use names.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)) => {}
            Err(e) => return Err(io_at("create a file in", root)(e)),
        }
    }
    let staging = root.join(STAGING_DIR);
    let made = !staging_made;
    if made {
        std::fs::create_dir_all(&staging).map_err(io_at("create", &staging))?;
    }
    let tmp = staging.join(staging_name(name));
    let file = OpenOptions::new().write(true).read(true).create_new(true).custom_flags(libc::O_NOFOLLOW).open(&tmp).map_err(io_at("create", &tmp))?;
    Ok((Tmp { file, named: Some(tmp) }, made))
}

/// Gives the waiting copy its name, create-only: `link` fails if anything
/// is at `dest`. An unnamed file is linked through `/proc/self/fd`, which
/// needs no privilege (unlike `AT_EMPTY_PATH`).
fn link_tmp(tmp: &Tmp, dest: &Path) -> io::Result<()> {
    match &tmp.named {
        Some(path) => std::fs::hard_link(path, dest),
        None => {
            use std::os::unix::ffi::OsStrExt;
            let from = std::ffi::CString::new(format!("/proc/self/fd/{}", tmp.file.as_raw_fd())).expect("no NUL in a number");
            let to = std::ffi::CString::new(dest.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: both paths are NUL-terminated and live through the call.
            let rc = unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
    }
}

/// A staging name unique to this upload.
fn staging_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{name}.{}-{nanos:x}-{n}", std::process::id())
}

/// Compresses all of `src` (from offset 0) into `dst` at `level`, checked
/// as it is made (see [`crate::compress::Packer`]).
fn pack(src: File, src_path: &Path, level: i32, dst: &mut File, dst_path: &Path) -> Result<Sums, StorageError> {
    let mut source = Source::new(std::sync::Arc::new(src), Some(level)).map_err(io_at("compress", src_path))?;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = source.fill(&mut buf).map_err(|cause| StorageError::Io { verb: crate::compress::fill_verb(&cause), path: src_path.to_owned(), cause })?;
        dst.write_all(&buf[..n]).map_err(io_at("write", dst_path))?;
        if n < buf.len() {
            break;
        }
    }
    source.finish().map_err(|why| StorageError::Io { verb: "compress", path: src_path.to_owned(), cause: io::Error::other(why) })
}

/// Copies all of `src` (from offset 0) into `dst`, in the kernel where the
/// filesystem can, and returns how many bytes were copied.
fn copy(src: &File, src_path: &Path, dst: &mut File, dst_path: &Path) -> Result<u64, StorageError> {
    let mut copied = 0u64;
    loop {
        let mut off_in = copied as libc::loff_t;
        // SAFETY: both descriptors are open for as long as the call runs;
        // the offsets are ours, the output file's own offset moves.
        let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), std::ptr::null_mut(), 1 << 30, 0) };
        if n > 0 {
            copied += n as u64;
            continue;
        }
        if n == 0 {
            return Ok(copied);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // Not across these filesystems, or not at all: copy through user space.
            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) if copied == 0 => {
                return copy_through_user_space(src, src_path, dst, dst_path);
            }
            // Either side's: both are named.
            _ => {
                let mut both = src_path.as_os_str().to_owned();
                both.push(" to ");
                both.push(dst_path.as_os_str());
                return Err(StorageError::Io { verb: "copy", path: PathBuf::from(both), cause: e });
            }
        }
    }
}

fn copy_through_user_space(src: &File, src_path: &Path, dst: &mut File, dst_path: &Path) -> Result<u64, StorageError> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut copied = 0u64;
    loop {
        let n = match src.read_at(&mut buf, copied) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(cause) => {
                return Err(StorageError::Io { verb: "read", path: src_path.to_owned(), cause });
            }
        };
        dst.write_all(&buf[..n]).map_err(io_at("write", dst_path))?;
        copied += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_keys_that_are_not_plain_names() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalDir::open(dir.path(), false).unwrap();
        for key in ["", "a//b", "../x", "a/../b", ".", "a/./b", "/abs"] {
            assert!(local.path(key).is_err(), "{key:?}");
        }
        assert_eq!(local.path("_chain/start-1").unwrap(), dir.path().join("_chain").join("start-1"));
    }

    /// Stages and publishes one segment, with unnamed files or without,
    /// and returns what the archive then holds.
    fn stage_and_publish(unnamed: bool) -> (Vec<String>, Vec<u8>, Vec<String>) {
        let wal = tempfile::tempdir().unwrap();
        let archive = tempfile::tempdir().unwrap();
        let name = "wal-0000000000000001-0000000000000010.seg";
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(wal.path().join(name), &bytes).unwrap();
        let segment = crate::wal::WalDir::open(wal.path()).unwrap().open_segment(name).unwrap();
        let local = LocalDir::open(archive.path(), false).unwrap();
        local.unnamed.store(unnamed, Ordering::Relaxed);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let Staged::Copy(copy) = rt.block_on(local.stage(&segment, name, bytes.len() as u64, None)).unwrap() else {
            panic!("nothing was under the key, yet staging found something")
        };
        assert_eq!((copy.size, copy.crc), (bytes.len() as u64, crc32c::crc32c(&bytes)));
        assert_eq!(copy.tmp.named.is_some(), !unnamed, "{copy:?}");
        assert!(!archive.path().join(name).exists(), "published before the batch was");
        let published = rt.block_on(local.publish_staged(vec![copy]));
        assert!(matches!(published.as_slice(), [Ok(true)]), "{published:?}");
        let entries = |dir: &Path| -> Vec<String> {
            let mut v: Vec<String> =
                std::fs::read_dir(dir).map_or_else(|_| Vec::new(), |d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect());
            v.sort();
            v
        };
        (entries(archive.path()), std::fs::read(archive.path().join(name)).unwrap(), entries(&archive.path().join(STAGING_DIR)))
    }

    #[test]
    fn publishes_an_unnamed_copy_under_its_key_and_leaves_no_staging_file() {
        let (entries, stored, staging) = stage_and_publish(true);
        assert_eq!(entries, ["wal-0000000000000001-0000000000000010.seg"]);
        assert_eq!(stored.len(), 100_000);
        assert!(staging.is_empty(), "{staging:?}");
    }

    #[test]
    fn publishes_through_a_named_staging_file_where_unnamed_files_are_refused() {
        let (entries, stored, staging) = stage_and_publish(false);
        assert_eq!(entries, [STAGING_DIR, "wal-0000000000000001-0000000000000010.seg"]);
        assert_eq!(stored, (0..100_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
        assert!(staging.is_empty(), "the staging name is left: {staging:?}");
    }

    #[test]
    fn publishes_a_batch_of_many_copies_each_synced() {
        let wal = tempfile::tempdir().unwrap();
        let archive = tempfile::tempdir().unwrap();
        let local = LocalDir::open(archive.path(), false).unwrap();
        let dir = crate::wal::WalDir::open(wal.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let names: Vec<String> = (0..SYNCS_IN_FLIGHT as u64 + 4).map(|i| format!("wal-{:016x}-{:016x}.seg", i * 16 + 1, i * 16 + 16)).collect();
        let mut copies = Vec::new();
        for (i, name) in names.iter().enumerate() {
            std::fs::write(wal.path().join(name), vec![i as u8; 16]).unwrap();
            let segment = dir.open_segment(name).unwrap();
            let Staged::Copy(copy) = rt.block_on(local.stage(&segment, name, 16, None)).unwrap() else { panic!("staged nothing") };
            copies.push(copy);
        }
        let published = rt.block_on(local.publish_staged(copies));
        assert!(published.iter().all(|r| matches!(r, Ok(true))), "{published:?}");
        for (i, name) in names.iter().enumerate() {
            assert_eq!(std::fs::read(archive.path().join(name)).unwrap(), vec![i as u8; 16], "{name}");
        }
    }

    #[test]
    fn refuses_to_publish_over_anything_already_under_the_key() {
        for unnamed in [true, false] {
            let wal = tempfile::tempdir().unwrap();
            let archive = tempfile::tempdir().unwrap();
            let name = "wal-0000000000000001-0000000000000010.seg";
            std::fs::write(wal.path().join(name), b"the segment").unwrap();
            let segment = crate::wal::WalDir::open(wal.path()).unwrap().open_segment(name).unwrap();
            let local = LocalDir::open(archive.path(), false).unwrap();
            local.unnamed.store(unnamed, Ordering::Relaxed);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let Staged::Copy(copy) = rt.block_on(local.stage(&segment, name, 11, None)).unwrap() else { panic!("staged nothing") };
            // Another writer gets there between staging and publishing.
            std::fs::write(archive.path().join(name), b"other bytes").unwrap();
            let published = rt.block_on(local.publish_staged(vec![copy]));
            assert!(matches!(published.as_slice(), [Ok(false)]), "unnamed {unnamed}: {published:?}");
            assert_eq!(std::fs::read(archive.path().join(name)).unwrap(), b"other bytes", "unnamed {unnamed}: overwritten");
        }
    }
}
