//! Compression of segments on their way into the archive (`--compression
//! zstd[:LEVEL]`), and decoding on their way out, streaming in bounded memory.
//!
//! A compressed segment is stored as `{name}.zst`, one zstd frame whose
//! decoded bytes are the segment's, exactly. What is compressed is checked
//! as it is made: every compressed byte also goes through a decoder, and
//! the decoded size and CRC32C must be the file's before anything is
//! published. Reading a compressed object back decodes it the same way.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::bindings::wit;

/// What an object name ends in when the object is compressed.
pub const ZSTD_SUFFIX: &str = ".zst";
/// The level `zstd` alone means: zstd's own default.
pub const DEFAULT_LEVEL: i32 = 3;

/// How uploads store segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// As the file (the default; archives stay as earlier versions made them).
    #[default]
    None,
    /// zstd at a level from 1 (fastest) to 19.
    Zstd { level: i32 },
}

impl Compression {
    /// As the planner takes it: the level is the host's alone.
    pub fn to_wit(self) -> wit::Compression {
        match self {
            Compression::None => wit::Compression::None,
            Compression::Zstd { .. } => wit::Compression::Zstd,
        }
    }
}

/// Why a compression setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot use compression {given:?}: {why} (use `none`, `zstd`, or `zstd:LEVEL` with a level from 1 to 19)")]
pub struct CompressionError {
    given: String,
    why: &'static str,
}

impl std::str::FromStr for Compression {
    type Err = CompressionError;

    /// `none` (or `off`), `zstd` (level 3), `zstd:N` for N from 1 to 19.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |why| CompressionError { given: s.to_owned(), why };
        match s.split_once(':') {
            None if s == "none" || s == "off" => Ok(Compression::None),
            None if s == "zstd" => Ok(Compression::Zstd { level: DEFAULT_LEVEL }),
            None => Err(refuse("not a known compression")),
            Some(("zstd", n)) => match n.parse::<i32>() {
                Ok(level @ 1..=19) => Ok(Compression::Zstd { level }),
                Ok(_) => Err(refuse("the level is out of range")),
                Err(_) => Err(refuse("the level is not a number")),
            },
            Some(_) => Err(refuse("only zstd takes a level")),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

/// The segment's file name inside an object name: without `.zst`.
pub fn segment_name(object: &str) -> &str {
    object.strip_suffix(ZSTD_SUFFIX).unwrap_or(object)
}

/// True when the object under `key` is stored compressed.
pub fn is_compressed(key: &str) -> bool {
    key.ends_with(ZSTD_SUFFIX)
}

/// Size and CRC32C of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sum {
    pub size: u64,
    pub crc: u32,
}

impl Sum {
    pub fn add(&mut self, bytes: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.size += bytes.len() as u64;
    }

    pub fn pair(self) -> (u64, u32) {
        (self.size, self.crc)
    }
}

/// A file read from its start through `pread` (the descriptor's offset is
/// shared with its clones and never moved), summing what it reads.
struct FileReader {
    file: Arc<File>,
    sum: Sum,
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.file.read_at(buf, self.sum.size) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        self.sum.add(&buf[..n]);
        Ok(n)
    }
}

/// What compressing one segment gave: the file's bytes read, and the
/// object's bytes made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sums {
    pub read: Sum,
    pub object: Sum,
}

/// One segment being compressed: its file in, its object's bytes out, in
/// pieces of the caller's size, each checked by decoding as it is made.
pub struct Packer {
    encoder: zstd::stream::read::Encoder<'static, BufReader<FileReader>>,
    check: zstd::stream::write::Decoder<'static, Tee<io::Sink>>,
    object: Sum,
}

impl Packer {
    pub fn new(file: Arc<File>, level: i32) -> io::Result<Self> {
        let mut encoder = zstd::stream::read::Encoder::new(FileReader { file, sum: Sum::default() }, level)?;
        // The frame carries a checksum of its content (XXH64), which every
        // decoder checks: a damaged object cannot decode to wrong bytes.
        encoder.include_checksum(true)?;
        let check = zstd::stream::write::Decoder::new(Tee { out: io::sink(), sum: Sum::default() })?;
        Ok(Self { encoder, check, object: Sum::default() })
    }

    /// Fills `buf` with the object's next bytes; fewer than asked only at
    /// the end (0 once it is all out). A read error is the file's.
    pub fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.encoder.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.object.add(&buf[..filled]);
        // The decoder must take every byte made; a frame it refuses is a
        // compressor that did not make what it should.
        // (InvalidData: the compressor's failure, not the file's.)
        self.check
            .write_all(&buf[..filled])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("the compressed bytes do not decode: {e}")))?;
        Ok(filled)
    }

    /// The sums, once everything is out; an error when the bytes made do
    /// not decode to exactly the bytes read.
    pub fn finish(mut self) -> Result<Sums, String> {
        self.check.do_finish().map_err(|e| format!("the compressed bytes do not decode: {e}"))?;
        let read = self.encoder.get_ref().get_ref().sum;
        let decoded = self.check.get_ref().sum;
        if decoded != read {
            return Err(format!(
                "the compressed bytes decode to {} bytes with CRC32C {:08x}, but {} bytes with CRC32C {:08x} were read",
                decoded.size, decoded.crc, read.size, read.crc
            ));
        }
        Ok(Sums { read, object: self.object })
    }
}

/// Decodes an object's bytes as they come, into `out`, summing both sides.
pub struct Unpacker<W: Write> {
    decoder: zstd::stream::write::Decoder<'static, Tee<W>>,
    object: Sum,
}

/// Sums what goes through it on its way to `out`.
pub struct Tee<W: Write> {
    out: W,
    sum: Sum,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.sum.add(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Unpacker<W> {
    pub fn new(out: W) -> io::Result<Self> {
        Ok(Self { decoder: zstd::stream::write::Decoder::new(Tee { out, sum: Sum::default() })?, object: Sum::default() })
    }

    /// Takes the object's next bytes. An error is a frame that does not
    /// decode, or `out` failing (an error of `out`'s own kind).
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.object.add(bytes);
        self.decoder.write_all(bytes)
    }

    /// The object's sum and the decoded sum, once every byte was pushed;
    /// an error when the last frame was cut short.
    pub fn finish(mut self) -> io::Result<(Sum, Sum, W)> {
        // Not only a flush: a last frame cut short is an error here.
        self.decoder.do_finish()?;
        let object = self.object;
        let tee = self.decoder.into_inner();
        Ok((object, tee.sum, tee.out))
    }
}

/// The bytes an upload sends for one segment: the file's, or the file
/// compressed. Read from the file's start through `pread`.
pub enum Source {
    Plain(FileReaderHandle),
    Packed(Box<Packer>),
}

/// A plain file being read, for [`Source::Plain`].
pub struct FileReaderHandle(FileReader);

impl Source {
    /// The file's bytes, or with `level` the file compressed at that level.
    pub fn new(file: Arc<File>, level: Option<i32>) -> io::Result<Self> {
        Ok(match level {
            None => Source::Plain(FileReaderHandle(FileReader { file, sum: Sum::default() })),
            Some(level) => Source::Packed(Box::new(Packer::new(file, level)?)),
        })
    }

    /// Fills `buf`; fewer bytes than asked only at the end.
    pub fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Packed(p) => p.fill(buf),
            Source::Plain(FileReaderHandle(r)) => {
                let mut filled = 0;
                while filled < buf.len() {
                    match r.read(&mut buf[filled..])? {
                        0 => break,
                        n => filled += n,
                    }
                }
                Ok(filled)
            }
        }
    }

    /// What was read from the file and what was made of it, once all is out.
    pub fn finish(self) -> Result<Sums, String> {
        match self {
            Source::Packed(p) => p.finish(),
            Source::Plain(FileReaderHandle(r)) => Ok(Sums { read: r.sum, object: r.sum }),
        }
    }

    /// The most bytes this source makes of a file of `size` bytes.
    pub fn bound(&self, size: u64) -> u64 {
        match self {
            Source::Packed(_) => bound(size),
            Source::Plain(_) => size,
        }
    }
}

/// The verb of an error from [`Source::fill`]: a compressor whose bytes do
/// not decode (`InvalidData`) is not a file that cannot be read.
pub fn fill_verb(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::InvalidData { "compress" } else { "read" }
}

/// The most bytes zstd makes of `size` bytes of input, whatever they are.
pub fn bound(size: u64) -> u64 {
    // zstd's documented bound: size + size/256 + a little for small inputs.
    size + (size >> 8) + if size < (128 << 10) { ((128 << 10) - size) >> 11 } else { 0 } + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_settings_it_prints_and_refuses_others() {
        for c in [Compression::None, Compression::Zstd { level: 1 }, Compression::Zstd { level: 19 }] {
            assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
        }
        assert_eq!("zstd".parse(), Ok(Compression::Zstd { level: 3 }));
        assert_eq!("off".parse(), Ok(Compression::None));
        for bad in ["gzip", "zstd:0", "zstd:20", "zstd:x", "zstd:", "none:1", "ZSTD", ""] {
            let e = bad.parse::<Compression>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("cannot use compression {bad:?}")), "{e}");
        }
    }

    fn packed(bytes: &[u8], piece: usize) -> (Vec<u8>, Sums) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, bytes).unwrap();
        let mut p = Packer::new(Arc::new(File::open(&path).unwrap()), 3).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; piece];
        loop {
            let n = p.fill(&mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
            if n < piece {
                break;
            }
        }
        (out, p.finish().unwrap())
    }

    #[test]
    fn decodes_what_it_packs_to_the_exact_bytes_in_any_piece_size() {
        let text: Vec<u8> = (0..300_000u32).flat_map(|i| format!("key-{} value-{}\n", i % 1000, i % 7).into_bytes()).collect();
        let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for bytes in [Vec::new(), vec![7u8], text, noise] {
            for piece in [1, 4096, 8 << 20] {
                let (object, sums) = packed(&bytes, piece);
                assert_eq!(sums.read.pair(), (bytes.len() as u64, crc32c::crc32c(&bytes)));
                assert_eq!(sums.object.pair(), (object.len() as u64, crc32c::crc32c(&object)));
                assert!(sums.object.size <= bound(bytes.len() as u64), "{} > bound of {}", sums.object.size, bytes.len());
                let mut u = Unpacker::new(Vec::new()).unwrap();
                for part in object.chunks(1000) {
                    u.push(part).unwrap();
                }
                let (o, d, out) = u.finish().unwrap();
                assert_eq!((o, d), (sums.object, sums.read));
                assert!(out == bytes, "decoded bytes differ");
            }
        }
    }

    #[test]
    fn refuses_an_object_that_was_cut_short_or_changed() {
        let bytes: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 300).to_le_bytes()).collect();
        let (object, _) = packed(&bytes, 1 << 20);
        let mut u = Unpacker::new(io::sink()).unwrap();
        u.push(&object[..object.len() - 10]).unwrap();
        assert!(u.finish().is_err(), "a frame cut short decodes");
        let mut flipped = object.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x40;
        let mut u = Unpacker::new(io::sink()).unwrap();
        let bad = u.push(&flipped).and_then(|()| u.finish().map(|(_, d, _)| d));
        assert!(!matches!(bad, Ok(d) if d.pair() == (bytes.len() as u64, crc32c::crc32c(&bytes))), "a changed frame decodes to the bytes");
    }
}
