//! Sample segments for trying the archiver out and for benchmarks.
//!
//! LSNs are byte positions, as in PostgreSQL: a segment of `size` bytes
//! starting at LSN `s` covers `s..=s+size-1`. Contents are pseudo-random
//! (so checksums and compression see real work) and depend only on the LSN.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why sample segments could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write segment {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("cannot generate segments: {0}")]
    Range(&'static str),
}

/// Writes `count` contiguous segments of `size` bytes from `start_lsn`.
/// Each is written under a `.partial` name, synced and renamed, the way a
/// database finishes a segment. Existing segments are never overwritten.
pub fn generate(dir: &Path, count: u64, size: u64, start_lsn: u64) -> Result<Vec<PathBuf>, GenerateError> {
    if size == 0 {
        return Err(GenerateError::Range("the segment size must be at least 1 byte"));
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |cause| GenerateError::Io { path, cause }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut out = Vec::new();
    let mut first = start_lsn;
    for _ in 0..count {
        let last = first
            .checked_add(size - 1)
            .ok_or(GenerateError::Range("the LSNs would pass u64::MAX"))?;
        let name = format!("wal-{first:016x}-{last:016x}.seg");
        let path = dir.join(&name);
        if path.symlink_metadata().is_ok() {
            return Err(GenerateError::Io {
                path,
                cause: io::Error::new(io::ErrorKind::AlreadyExists, "already exists"),
            });
        }
        let partial = dir.join(format!("{name}.partial"));
        let mut f: File = OpenOptions::new().write(true).create_new(true).open(&partial).map_err(io_err(&partial))?;
        write_content(&mut f, first, size).map_err(io_err(&partial))?;
        f.sync_all().map_err(io_err(&partial))?;
        drop(f);
        std::fs::rename(&partial, &path).map_err(io_err(&path))?;
        out.push(path);
        first = match last.checked_add(1) {
            Some(n) => n,
            None => break,
        };
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    Ok(out)
}

/// xorshift64* seeded by the first LSN: cheap, and different for every segment.
fn write_content(f: &mut File, first: u64, size: u64) -> io::Result<()> {
    let mut x = first ^ 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).expect("fits");
        for chunk in buf[..n].chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_contiguous_segments_of_the_asked_size() {
        let dir = tempfile::tempdir().unwrap();
        let paths = generate(dir.path(), 3, 100, 1).unwrap();
        let names: Vec<_> = paths.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_owned()).collect();
        assert_eq!(names, vec![
            "wal-0000000000000001-0000000000000064.seg",
            "wal-0000000000000065-00000000000000c8.seg",
            "wal-00000000000000c9-000000000000012c.seg",
        ]);
        for p in &paths {
            assert_eq!(std::fs::metadata(p).unwrap().len(), 100);
        }
        assert_ne!(std::fs::read(&paths[0]).unwrap(), std::fs::read(&paths[1]).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "no .partial left behind");
    }

    #[test]
    fn refuses_to_overwrite_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), 1, 10, 1).unwrap();
        let err = generate(dir.path(), 1, 10, 1).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn refuses_lsns_past_u64_max() {
        let dir = tempfile::tempdir().unwrap();
        assert!(generate(dir.path(), 2, 10, u64::MAX - 5).is_err());
        let last = generate(dir.path(), 1, 1, u64::MAX).unwrap();
        assert!(last[0].ends_with("wal-ffffffffffffffff-ffffffffffffffff.seg"));
    }
}
