//! The compiled-component cache, so that a second start does not compile again.
//!
//! An artifact is keyed by the engine's precompile compatibility hash and the
//! component's bytes. `Component::deserialize` trusts its input, so only
//! artifacts this host wrote are ever loaded: each carries a keyed BLAKE3 tag
//! made with a secret that lives in the cache directory (mode 0600), and the
//! directory must belong to this user and be writable by no one else.

use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

const TAG_LEN: usize = 32;

/// Why the cache could not be used. It is never fatal: the caller compiles.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use cache directory {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("cannot use cache directory {}: {why}", path.display())]
    Unsafe { path: PathBuf, why: &'static str },
}

/// What happened when a component was loaded through the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A valid artifact was found and deserialized: nothing was compiled.
    Hit,
    /// Compiled, and the artifact written for next time.
    Compiled,
    /// An artifact was there but its tag did not verify; it was replaced.
    Rejected,
}

/// A cache directory this host owns.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl CompileCache {
    /// `$WAL_ARCHIVER_CACHE_DIR`, else `$XDG_CACHE_HOME/wal-archiver`, else `~/.cache/wal-archiver`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("WAL_ARCHIVER_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("wal-archiver"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("wal-archiver"))
    }

    /// Opens (creating) the directory and its secret.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let io_err = |cause| CacheError::Io { path: dir.to_owned(), cause };
        fs::create_dir_all(dir).map_err(io_err)?;
        let meta = fs::metadata(dir).map_err(io_err)?;
        // SAFETY: geteuid has no preconditions.
        if meta.uid() != unsafe { libc::geteuid() } {
            return Err(CacheError::Unsafe { path: dir.to_owned(), why: "it belongs to another user" });
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(CacheError::Unsafe { path: dir.to_owned(), why: "others may write to it" });
        }
        let key_path = dir.join("key");
        let key = match File::open(&key_path) {
            Ok(mut f) => {
                let m = f.metadata().map_err(io_err)?;
                if m.uid() != unsafe { libc::geteuid() } || m.permissions().mode() & 0o077 != 0 {
                    return Err(CacheError::Unsafe { path: key_path, why: "the key file is not private to this user" });
                }
                let mut key = [0u8; 32];
                f.read_exact(&mut key).map_err(io_err)?;
                key
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                File::open("/dev/urandom").and_then(|mut r| r.read_exact(&mut key)).map_err(io_err)?;
                let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_path).map_err(io_err)?;
                f.write_all(&key).and_then(|()| f.sync_all()).map_err(io_err)?;
                key
            }
            Err(e) => return Err(io_err(e)),
        };
        Ok(Self { dir: dir.to_owned(), key })
    }

    fn artifact_path(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = h.finish();
        let component_key = blake3::hash(bytes);
        self.dir.join(format!("{engine_key:016x}-{}.cwasm", &component_key.to_hex()[..32]))
    }

    /// The component compiled from `bytes`, from the cache when a valid
    /// artifact is there, else compiled and stored.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> Result<(Component, Outcome), wasmtime::Error> {
        let path = self.artifact_path(engine, bytes);
        let mut outcome = Outcome::Compiled;
        if let Ok(data) = fs::read(&path) {
            match self.verified(&data) {
                Some(payload) => {
                    // SAFETY: the tag proves this host wrote these bytes with
                    // `Component::serialize` for an engine of this compatibility hash.
                    match unsafe { Component::deserialize(engine, payload) } {
                        Ok(c) => return Ok((c, Outcome::Hit)),
                        Err(e) => tracing::warn!("cannot load cached planner {}: {e:#}; compiling", path.display()),
                    }
                }
                None => {
                    tracing::warn!("cached planner {} did not verify; compiling it again", path.display());
                    outcome = Outcome::Rejected;
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&path, &component.serialize()?) {
            tracing::warn!("cannot write cached planner {}: {e}", path.display());
        }
        Ok((component, outcome))
    }

    fn verified<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        let split = data.len().checked_sub(TAG_LEN)?;
        let (payload, tag) = data.split_at(split);
        let want = blake3::keyed_hash(&self.key, payload);
        // blake3::Hash compares in constant time.
        (want == blake3::Hash::from_bytes(tag.try_into().ok()?)).then_some(payload)
    }

    fn store(&self, path: &Path, payload: &[u8]) -> io::Result<()> {
        let tag = blake3::keyed_hash(&self.key, payload);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(payload)?;
        f.write_all(tag.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = "(component (core module (func (export \"f\"))))";

    fn setup() -> (tempfile::TempDir, CompileCache, Engine, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(&dir.path().join("c")).unwrap();
        (dir, cache, Engine::default(), wat::parse_str(WAT).unwrap())
    }

    #[test]
    fn compiles_once_then_loads_from_the_cache() {
        let (_d, cache, engine, bytes) = setup();
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, Outcome::Compiled);
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, Outcome::Hit);
    }

    #[test]
    fn rejects_an_artifact_it_did_not_write() {
        let (_d, cache, engine, bytes) = setup();
        cache.load(&engine, &bytes).unwrap();
        let path = cache.artifact_path(&engine, &bytes);
        // A well-formed artifact under another key, as another writer would leave it.
        let other = CompileCache { dir: cache.dir.clone(), key: [7; 32] };
        let component = Component::new(&engine, &bytes).unwrap();
        other.store(&path, &component.serialize().unwrap()).unwrap();
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, Outcome::Rejected);
        // One flipped byte in our own artifact is rejected too.
        let mut data = fs::read(&path).unwrap();
        data[10] ^= 1;
        fs::write(&path, data).unwrap();
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, Outcome::Rejected);
        assert_eq!(cache.load(&engine, &bytes).unwrap().1, Outcome::Hit);
    }

    #[test]
    fn refuses_a_directory_others_may_write() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c");
        fs::create_dir(&c).unwrap();
        fs::set_permissions(&c, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(CompileCache::open(&c), Err(CacheError::Unsafe { .. })));
    }
}
