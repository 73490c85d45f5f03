//! The WAL directory, seen only through names directly inside it.
//!
//! Every name must be a single entry: no `/`, no `..`, never absolute, and a
//! symlink is never followed. A segment is read through one open descriptor
//! that is measured (`fstat`: size and modification time) before and after
//! the read: a file that changed while it was read is never published.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::bindings::wit;
use crate::storage::StorageError;

/// The WAL directory.
#[derive(Debug, Clone)]
pub struct WalDir {
    root: PathBuf,
    /// Host files kept in the directory (the state file, the lock) that are not WAL.
    hidden: Vec<OsString>,
}

/// What `fstat` says of an open file: enough to tell that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i128,
    pub dev: u64,
    pub ino: u64,
}

impl Stat {
    fn of(file: &File) -> io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self { size: m.len(), mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()), dev: m.dev(), ino: m.ino() })
    }
}

/// A segment open for reading, and how it was when it was opened.
#[derive(Debug)]
pub struct SegmentFile {
    pub file: File,
    pub path: PathBuf,
    pub name: String,
    /// `fstat` right after opening.
    pub opened: Stat,
}

impl SegmentFile {
    /// Checks, on the open descriptor, that the file is as it was when it
    /// was opened and holds `read` bytes, `listed` when the listing's size is
    /// known: else it is still being written, and nothing read from it may
    /// be published.
    pub fn check_unchanged(&self, read: u64, listed: Option<u64>) -> Result<(), StorageError> {
        let now = Stat::of(&self.file).map_err(|cause| StorageError::Io { verb: "stat", path: self.path.clone(), cause })?;
        let why = if now.size != self.opened.size || now.mtime_ns != self.opened.mtime_ns {
            format!(
                "it changed while it was read (size {} then {}, modified {} then {})",
                self.opened.size,
                now.size,
                describe_mtime(self.opened.mtime_ns),
                describe_mtime(now.mtime_ns)
            )
        } else if read != now.size {
            format!("{read} bytes were read but it has {}", now.size)
        } else if let Some(listed) = listed.filter(|l| *l != read) {
            format!("it was listed with {listed} bytes but has {read}")
        } else {
            return Ok(());
        };
        Err(StorageError::Changed { path: self.path.clone(), why })
    }

    /// Size and CRC32C of the whole file, read from its start, and checked
    /// unchanged afterwards.
    pub fn checksum(&self, listed: Option<u64>) -> Result<(u64, u32), StorageError> {
        let (size, crc) = checksum_reader(&self.file, &self.path)?;
        self.check_unchanged(size, listed)?;
        Ok((size, crc))
    }
}

fn describe_mtime(ns: i128) -> String {
    format!("{}.{:09}", ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Size and CRC32C of everything `file` holds from offset 0, read with
/// `pread` so that the descriptor's own position does not matter.
pub fn checksum_reader(file: &File, path: &Path) -> Result<(u64, u32), StorageError> {
    use std::os::unix::fs::FileExt;
    thread_local! {
        // One buffer per thread, kept: small segments would otherwise pay
        // for a fresh megabyte each.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.resize(1 << 20, 0);
        let (mut size, mut crc) = (0u64, 0u32);
        loop {
            match file.read_at(buf, size) {
                Ok(0) => return Ok((size, crc)),
                Ok(n) => {
                    crc = crc32c::crc32c_append(crc, &buf[..n]);
                    size += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(cause) => {
                    return Err(StorageError::Io { verb: "read", path: path.to_owned(), cause });
                }
            }
        }
    })
}

impl WalDir {
    /// Opens an existing directory.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let wal_err = |cause| StorageError::WalDir { path: path.to_owned(), cause };
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

    /// True when `name` is one of the host's own files here.
    pub fn is_hidden(&self, name: &std::ffi::OsStr) -> bool {
        self.hidden.iter().any(|h| h == name)
    }

    /// Lists the entries directly inside, without following symlinks.
    pub fn list(&self) -> Result<wit::DirListing, StorageError> {
        let wal_err = |cause| StorageError::WalDir { path: self.root.clone(), cause };
        let mut out = wit::DirListing::default();
        for entry in std::fs::read_dir(&self.root).map_err(wal_err)? {
            let entry = entry.map_err(wal_err)?;
            let name = entry.file_name();
            if self.is_hidden(&name) {
                continue;
            }
            // A file that vanished between readdir and lstat is simply not listed.
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(wal_err(e)),
            };
            let (kind, size) = kind_of(&meta);
            let (name, utf8) = match name.into_string() {
                Ok(s) => (s, true),
                Err(raw) => (raw.to_string_lossy().into_owned(), false),
            };
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
        if self.is_hidden(std::ffi::OsStr::new(name)) {
            return Err(StorageError::RefusedName { name: name.to_owned(), why: "a file of the archiver's own" });
        }
        Ok(self.root.join(name))
    }

    /// Opens a segment for reading, never through a symlink, never a FIFO or
    /// device, and measures it.
    pub fn open_segment(&self, name: &str) -> Result<SegmentFile, StorageError> {
        let path = self.entry_path(name)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            // O_NONBLOCK: opening a FIFO named like a segment must not hang.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|cause| match cause.raw_os_error() {
                Some(libc::ENOENT) => StorageError::NotFound { path: path.clone() },
                Some(libc::ELOOP) => StorageError::NotAFile { path: path.clone() },
                _ => StorageError::Io { verb: "open", path: path.clone(), cause },
            })?;
        let meta = file.metadata().map_err(|cause| StorageError::Io { verb: "stat", path: path.clone(), cause })?;
        let ft = meta.file_type();
        if !ft.is_file() || ft.is_fifo() {
            return Err(StorageError::NotAFile { path });
        }
        let opened = Stat::of(&file).map_err(|cause| StorageError::Io { verb: "stat", path: path.clone(), cause })?;
        Ok(SegmentFile { file, path, name: name.to_owned(), opened })
    }

    /// Syncs the directory, so that removals outlive a crash.
    pub fn sync(&self) -> Result<(), StorageError> {
        sync_dir(&self.root).map_err(|cause| StorageError::Io { verb: "sync", path: self.root.clone(), cause })
    }

    /// Removes a regular file entry; [`WalDir::sync`] makes removals durable.
    pub fn remove_segment(&self, name: &str) -> Result<(), StorageError> {
        let path = self.entry_path(name)?;
        match path.symlink_metadata() {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err(StorageError::NotAFile { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound { path });
            }
            Err(cause) => {
                return Err(StorageError::Io { verb: "stat", path, cause });
            }
        }
        std::fs::remove_file(&path).map_err(|cause| StorageError::Io { verb: "delete", path: path.clone(), cause })
    }
}

/// What an entry is, and its size (0 for anything but a regular file).
pub fn kind_of(meta: &std::fs::Metadata) -> (wit::EntryKind, u64) {
    let ft = meta.file_type();
    if ft.is_file() {
        (wit::EntryKind::File, meta.len())
    } else if ft.is_dir() {
        (wit::EntryKind::Dir, 0)
    } else if ft.is_symlink() {
        (wit::EntryKind::Symlink, 0)
    } else {
        (wit::EntryKind::Other, 0)
    }
}

/// Syncs a directory, so that the entries made or removed in it outlive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads until `buf` is full or the file ends; returns how much was read.
pub fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
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
