//! One archiver per WAL directory: an exclusive advisory lock (`flock`) on
//! a lock file in the directory, held for the life of `archive`. Two
//! archivers on one directory would race on the state file and on every
//! decision; the second one stops at once and says who holds the lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file's name in the WAL directory.
pub const LOCK_NAME: &str = ".wal-archiver.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot archive {}: another wal-archiver ({holder}) is archiving {}; stop it first, or wait for it to finish", dir.display(), dir.display())]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
}

/// The lock, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(false) } else { Err(e) }
}

impl DirLock {
    /// Takes the lock of the WAL directory `dir`. The lock file records the
    /// holder's pid. A directory the archiver cannot write to is locked
    /// through its own descriptor instead (the holder is then unnamed).
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_NAME);
        let io_err = |cause| LockError::Io { path: path.clone(), cause };
        let opened = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o644).custom_flags(libc::O_NOFOLLOW).open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM)) => {
                let f = File::open(dir).map_err(|cause| LockError::Io { path: dir.to_owned(), cause })?;
                return match try_flock(&f).map_err(|cause| LockError::Io { path: dir.to_owned(), cause })? {
                    true => Ok(Self { _file: f }),
                    false => Err(LockError::Held { dir: dir.to_owned(), holder: "another process".into() }),
                };
            }
            Err(e) => return Err(io_err(e)),
        };
        if !try_flock(&file).map_err(io_err)? {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "another process".into(),
            };
            return Err(LockError::Held { dir: dir.to_owned(), holder });
        }
        file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id())).map_err(io_err)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_second_holder_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }
}
