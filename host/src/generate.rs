//! Sample segments for trying the archiver out and for benchmarks.
//!
//! LSNs are byte positions, as in PostgreSQL: a segment of `size` bytes
//! starting at LSN `s` covers `s..=s+size-1`. Contents depend only on the
//! LSN, and are one of two kinds ([`Content`]): pseudo-random bytes, which
//! nothing compresses, or WAL-like records, which compress about as a
//! database's log does.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why sample segments could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write segment {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("cannot {verb} directory {}: {cause}", path.display())]
    Dir { verb: &'static str, path: PathBuf, cause: io::Error },
    #[error("cannot generate segments: {0}")]
    Range(String),
}

/// What sample segments hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Content {
    /// Pseudo-random bytes: checksums see real work, compression gains nothing.
    #[default]
    Random,
    /// Log records as a database writes them: a fixed-layout header (magic,
    /// length, LSN, transaction id, resource manager), a table and key from
    /// a small set, and a small value, partly text and partly random. zstd
    /// at level 3 stores about a third of it.
    Wal,
}

/// Writes `count` contiguous segments of `size` bytes from `start_lsn`.
/// Each is written under a `.partial` name, synced and renamed, the way a
/// database finishes a segment. Existing segments are never overwritten.
pub fn generate(dir: &Path, count: u64, size: u64, start_lsn: u64) -> Result<Vec<PathBuf>, GenerateError> {
    generate_content(dir, count, size, start_lsn, Content::Random)
}

/// [`generate`], with the given kind of content.
pub fn generate_content(dir: &Path, count: u64, size: u64, start_lsn: u64, content: Content) -> Result<Vec<PathBuf>, GenerateError> {
    if size == 0 {
        return Err(GenerateError::Range("the segment size must be at least 1 byte".into()));
    }
    // All of them or none: the last LSN asked for must exist.
    let end = u128::from(start_lsn) + u128::from(count) * u128::from(size);
    if end > u128::from(u64::MAX) + 1 {
        let fit = (u128::from(u64::MAX) + 1 - u128::from(start_lsn)) / u128::from(size);
        return Err(GenerateError::Range(format!(
            "{count} segments of {size} bytes from LSN {start_lsn:#x} would pass the last LSN, {:#x}; at most {fit} fit",
            u64::MAX
        )));
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |cause| GenerateError::Io { path, cause }
    };
    std::fs::create_dir_all(dir).map_err(|cause| GenerateError::Dir { verb: "create", path: dir.to_owned(), cause })?;
    let mut out = Vec::new();
    let mut first = start_lsn;
    for _ in 0..count {
        let last = first
            .checked_add(size - 1)
            .ok_or_else(|| GenerateError::Range("the LSNs would pass u64::MAX".into()))?;
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
        match content {
            Content::Random => write_content(&mut f, first, size),
            Content::Wal => write_records(&mut f, first, size),
        }
        .map_err(io_err(&partial))?;
        f.sync_all().map_err(io_err(&partial))?;
        drop(f);
        std::fs::rename(&partial, &path).map_err(io_err(&path))?;
        out.push(path);
        first = match last.checked_add(1) {
            Some(n) => n,
            None => break,
        };
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(|cause| GenerateError::Dir { verb: "sync", path: dir.to_owned(), cause })?;
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

/// Tables and statuses the records name: a working set, as in a real
/// database, so that keys and values repeat.
const TABLES: [&str; 6] = ["orders", "order_items", "customers", "inventory", "payments", "shipments"];
const STATUSES: [&str; 5] = ["pending", "paid", "packed", "shipped", "delivered"];

/// WAL-like records from LSN `first`, the last one cut at `size` bytes.
fn write_records(f: &mut File, first: u64, size: u64) -> io::Result<()> {
    // Odd, so never the all-zero state that xorshift cannot leave.
    let mut x = (first ^ 0x5851_f42d_4c95_7f2d) | 1;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut written = 0u64;
    let mut xid = (first / 4096) as u32;
    let mut lsn = first;
    while written < size {
        let r = next();
        if r % 4 == 0 {
            xid = xid.wrapping_add(1);
        }
        let table = TABLES[(r >> 8) as usize % TABLES.len()];
        let key = (r >> 16) % 10_000;
        let status = STATUSES[(r >> 40) as usize % STATUSES.len()];
        let mut body = format!("{table}:{key}\x00{{\"qty\":{},\"status\":\"{status}\",\"price\":{}.{:02}}}", (r >> 32) % 20, (r >> 44) % 500, (r >> 56) % 100)
            .into_bytes();
        // A few bytes no model predicts: hashes, timestamps, row versions.
        body.extend_from_slice(&next().to_le_bytes()[..6]);
        let len = 24 + body.len() as u32;
        out.extend_from_slice(&0xD0DB_1E55u32.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(&xid.to_le_bytes());
        out.extend_from_slice(&[(r >> 60) as u8 % 4, 0x10]);
        out.extend_from_slice(&(next() as u16).to_le_bytes());
        out.extend_from_slice(&body);
        // The last record may end past u64::MAX; it is cut there anyway.
        lsn = lsn.wrapping_add(u64::from(len));
        if out.len() >= 1 << 20 || written + out.len() as u64 >= size {
            let n = out.len().min(usize::try_from(size - written).unwrap_or(usize::MAX));
            f.write_all(&out[..n])?;
            written += n as u64;
            out.clear();
        }
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
    fn writes_wal_like_records_that_depend_only_on_the_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let paths = generate_content(dir.path(), 2, 1 << 20, 1, Content::Wal).unwrap();
        let first = std::fs::read(&paths[0]).unwrap();
        assert_eq!(first.len(), 1 << 20);
        // Records one after another: magic, a length that leads to the
        // next record, LSNs that grow by the record's length.
        let (mut at, mut lsn, mut records) = (0usize, 1u64, 0);
        while at + 24 <= first.len() {
            assert_eq!(u32::from_le_bytes(first[at..at + 4].try_into().unwrap()), 0xD0DB_1E55, "at byte {at}");
            let len = u32::from_le_bytes(first[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(u64::from_le_bytes(first[at + 8..at + 16].try_into().unwrap()), lsn);
            assert!((40..200).contains(&len), "record of {len} bytes at {at}");
            at += len;
            lsn += len as u64;
            records += 1;
        }
        assert!(records > 5_000, "{records} records in 1 MiB");
        // Another segment, other records; the same LSN, the same bytes.
        assert_ne!(std::fs::read(&paths[1]).unwrap()[..4096], first[..4096]);
        let again = tempfile::tempdir().unwrap();
        let same = generate_content(again.path(), 1, 1 << 20, 1, Content::Wal).unwrap();
        assert!(std::fs::read(&same[0]).unwrap() == first);
    }

    #[test]
    fn refuses_to_overwrite_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), 1, 10, 1).unwrap();
        let err = generate(dir.path(), 1, 10, 1).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn writes_none_when_not_all_asked_for_fit_below_the_last_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate(dir.path(), 2, 4096, 0xffff_ffff_ffff_f000).unwrap_err();
        assert!(err.to_string().contains("2 segments of 4096 bytes from LSN 0xfffffffffffff000 would pass the last LSN"), "{err}");
        assert!(err.to_string().contains("at most 1 fit"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a segment was written");
        // Exactly up to the last LSN: all of them.
        assert_eq!(generate(dir.path(), 1, 4096, 0xffff_ffff_ffff_f000).unwrap().len(), 1);
    }

    #[test]
    fn names_the_directory_it_cannot_create() {
        let err = generate(Path::new("/proc/no-such/wal"), 1, 10, 1).unwrap_err();
        assert!(err.to_string().starts_with("cannot create directory /proc/no-such/wal: "), "{err}");
    }

    #[test]
    fn refuses_lsns_past_u64_max() {
        let dir = tempfile::tempdir().unwrap();
        assert!(generate(dir.path(), 2, 10, u64::MAX - 5).is_err());
        let last = generate(dir.path(), 1, 1, u64::MAX).unwrap();
        assert!(last[0].ends_with("wal-ffffffffffffffff-ffffffffffffffff.seg"));
        // WAL-like records up to the last LSN there is.
        let wal = tempfile::tempdir().unwrap();
        let end = generate_content(wal.path(), 1, 4096, u64::MAX - 4095, Content::Wal).unwrap();
        assert_eq!(std::fs::metadata(&end[0]).unwrap().len(), 4096);
    }
}
