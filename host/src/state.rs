//! The state file: the planner's state between runs, written atomically.
//!
//! It records which archive it belongs to, so that a state for one
//! destination is never taken as the truth about another.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bindings::wit::ArchiverState;
pub use crate::bindings::empty_state;

/// Version 2: the state of WIT 0.4.0 and 0.5.0 (archived segments by object name, conflicts, the prune floor).
const VERSION: u32 = 2;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {verb} state file {}: {cause}", path.display())]
    Io { verb: &'static str, path: PathBuf, cause: io::Error },
    #[error("cannot read state file {}: {cause}", path.display())]
    Corrupt { path: PathBuf, cause: serde_json::Error },
    #[error("cannot use state file {}: it has version {found}, this wal-archiver reads {VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error(
        "cannot use state file {} for {wanted}: it belongs to the archive {found}; to archive this WAL directory to \
         a second archive as well, give that run a state file of its own with --state; if {found} was a mistake, \
         remove the state file (it is only a cache of the archive)",
        path.display()
    )]
    OtherArchive { path: PathBuf, wanted: String, found: String },
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    destination: String,
    state: ArchiverState,
}

/// Where the state lives, and for which archive.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
    destination: String,
}

impl StateStore {
    pub fn new(path: impl Into<PathBuf>, destination: &str) -> Self {
        Self { path: path.into(), destination: destination.trim_end_matches('/').to_owned() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a missing file is a fresh start.
    pub fn load(&self) -> Result<ArchiverState, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(empty_state()),
            Err(cause) => return Err(StateError::Io { verb: "read", path: self.path.clone(), cause }),
        };
        let file: StateFile = serde_json::from_slice(&bytes)
            .map_err(|cause| StateError::Corrupt { path: self.path.clone(), cause })?;
        if file.version != VERSION {
            return Err(StateError::Version { path: self.path.clone(), found: file.version });
        }
        if file.destination != self.destination {
            return Err(StateError::OtherArchive {
                path: self.path.clone(),
                wanted: self.destination.clone(),
                found: file.destination,
            });
        }
        Ok(file.state)
    }

    /// Saves the state: temp file, fsync, rename, fsync of the directory, so
    /// that a crash leaves either the old state or the new one.
    pub fn save(&self, state: &ArchiverState) -> Result<(), StateError> {
        let io_err = |verb| move |cause| StateError::Io { verb, path: self.path.clone(), cause };
        let file = StateFile { version: VERSION, destination: self.destination.clone(), state: state.clone() };
        let json = serde_json::to_vec_pretty(&file).expect("the state serializes");
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let mut f = File::create(&tmp).map_err(io_err("create"))?;
        let written = f.write_all(&json).map_err(io_err("write")).and_then(|()| f.sync_all().map_err(io_err("sync")));
        drop(f);
        if let Err(e) = written {
            // A half-written or unsynced copy is of no use to anyone: the
            // state file itself is untouched.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err("replace"))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err("sync the directory of"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("s.json"), "file:///a");
        let mut state = empty_state();
        state.last_archived_lsn = Some(u64::MAX);
        state.failures = 3;
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
    }

    #[test]
    fn refuses_a_state_of_another_archive() {
        let dir = tempfile::tempdir().unwrap();
        StateStore::new(dir.path().join("s.json"), "file:///a").save(&empty_state()).unwrap();
        let err = StateStore::new(dir.path().join("s.json"), "file:///b").load().unwrap_err();
        assert!(err.to_string().contains("belongs to the archive file:///a"), "{err}");
    }

    #[test]
    fn refuses_a_corrupt_state_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.json"), b"{ not json").unwrap();
        let err = StateStore::new(dir.path().join("s.json"), "file:///a").load().unwrap_err();
        assert!(err.to_string().starts_with("cannot read state file "), "{err}");
        assert!(err.to_string().contains("s.json"), "{err}");
    }
}
