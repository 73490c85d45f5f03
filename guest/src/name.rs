//! Strict segment file names: `wal-{first:016x}-{last:016x}.seg`, parsed and
//! formatted as a matched pair.
//!
//! Fixed-width lowercase hex makes name order LSN order and gives every LSN
//! range exactly one name, so two local files can never map onto one remote key.

use alloc::string::{String, ToString};
use core::fmt;

use crate::Lsn;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".seg";
const LSN_DIGITS: usize = 16;

/// Why a name is not a segment name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name does not start with `wal-`")]
    MissingPrefix,
    #[error("the name does not end in `.seg`")]
    WrongSuffix,
    #[error("the name is not `wal-FIRST-LAST.seg`")]
    WrongShape,
    #[error("an LSN field is {0} characters long, not 16")]
    WrongLength(u32),
    #[error("an LSN field is not lowercase hex")]
    NotLowercaseHex,
    #[error("the first LSN is above the last")]
    FirstAfterLast,
}

/// The LSN range of a valid segment file name.
///
/// It can only be made by [`SegmentName::parse`], so holding one means the
/// name was strict and `first <= last`:
///
/// ```
/// use wal_archiver_guest::SegmentName;
/// let name = SegmentName::parse("wal-000000000000000a-0000000000000064.seg").unwrap();
/// assert_eq!((name.first(), name.last()), (10, 100));
/// assert_eq!(name.to_string(), "wal-000000000000000a-0000000000000064.seg");
/// assert!(SegmentName::parse("wal-a-64.seg").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    first: Lsn,
    last: Lsn,
}

impl SegmentName {
    /// Parses `wal-{16 lowercase hex}-{16 lowercase hex}.seg` with first <= last.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        // The common case, a valid name, in one pass over fixed positions;
        // anything else takes the careful path below, which says what is
        // wrong. A listing of 100,000 names spent most of its planning time
        // here before (`cargo bench --bench planner`).
        let b = name.as_bytes();
        let (first_at, dash_at, suffix_at) = (PREFIX.len(), PREFIX.len() + LSN_DIGITS, NAME_LEN - SUFFIX.len());
        if b.len() == NAME_LEN
            && word(&b[..first_at]) == word(PREFIX.as_bytes())
            && b[dash_at] == b'-'
            && word(&b[suffix_at..]) == word(SUFFIX.as_bytes())
            && let (Some(first), Some(last)) = (hex16(&b[first_at..dash_at]), hex16(&b[dash_at + 1..suffix_at]))
        {
            return if first <= last { Ok(Self { first, last }) } else { Err(NameError::FirstAfterLast) };
        }
        let rest = name.strip_prefix(PREFIX).ok_or(NameError::MissingPrefix)?;
        let fields = rest.strip_suffix(SUFFIX).ok_or(NameError::WrongSuffix)?;
        let (first, last) = fields.split_once('-').ok_or(NameError::WrongShape)?;
        if last.contains('-') {
            return Err(NameError::WrongShape);
        }
        // Both lengths before either field's digits, as the WIT orders the checks.
        for field in [first, last] {
            check_length(field)?;
        }
        let first = parse_lsn_field(first)?;
        let last = parse_lsn_field(last)?;
        if first > last {
            return Err(NameError::FirstAfterLast);
        }
        Ok(Self { first, last })
    }

    /// The first LSN, inclusive.
    pub fn first(&self) -> Lsn {
        self.first
    }

    /// The last LSN, inclusive.
    pub fn last(&self) -> Lsn {
        self.last
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{:016x}-{:016x}{SUFFIX}", self.first, self.last)
    }
}

/// Formats the name of the range `first..=last`; the inverse of [`SegmentName::parse`].
pub fn format_segment_name(first: Lsn, last: Lsn) -> Result<String, NameError> {
    if first > last {
        return Err(NameError::FirstAfterLast);
    }
    Ok(SegmentName { first, last }.to_string())
}

/// How a segment is stored in the archive: as the file, or compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Compression {
    /// The object holds the segment's bytes.
    #[default]
    None,
    /// The object holds zstd frames whose decoded bytes are the segment's.
    Zstd,
}

/// What an object name ends in for each kind of storage.
const ZSTD_SUFFIX: &str = ".zst";

impl Compression {
    /// The suffix an object name adds to the segment name.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ZSTD_SUFFIX,
        }
    }
}

/// The name of an archive object that holds a segment: the segment's name,
/// followed by `.zst` when it is stored compressed.
///
/// It can only be made by [`ObjectName::parse`] (or from a parsed segment
/// name), so holding one means the segment part was strict:
///
/// ```
/// use wal_archiver_guest::name::{Compression, ObjectName};
/// let o = ObjectName::parse("wal-000000000000000a-0000000000000064.seg.zst").unwrap();
/// assert_eq!((o.segment().first(), o.compression()), (10, Compression::Zstd));
/// assert_eq!(o.to_string(), "wal-000000000000000a-0000000000000064.seg.zst");
/// assert!(ObjectName::parse("wal-000000000000000a-0000000000000064.seg.gz").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName {
    segment: SegmentName,
    compression: Compression,
}

impl ObjectName {
    /// Parses a segment name, or a segment name followed by `.zst`. A name
    /// that is neither fails as its segment part fails (`x.seg.gz` ends in
    /// the wrong suffix).
    #[inline(never)]
    pub fn parse(name: &str) -> Result<Self, NameError> {
        // One call of the segment parser, and not inlined itself: the fast
        // path is large, and the component has a size budget.
        let (segment, compression) = match name.strip_suffix(ZSTD_SUFFIX) {
            Some(segment) => (segment, Compression::Zstd),
            None => (name, Compression::None),
        };
        Ok(Self { segment: SegmentName::parse(segment)?, compression })
    }

    /// The object that holds `segment` stored as `compression` says.
    pub fn new(segment: SegmentName, compression: Compression) -> Self {
        Self { segment, compression }
    }

    /// The segment it holds.
    pub fn segment(&self) -> SegmentName {
        self.segment
    }

    /// How it holds it.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.segment, self.compression.suffix())
    }
}

/// The segment name inside an object name: `name` without `.zst`. Only for
/// names that parsed as object names.
pub fn segment_part(name: &str) -> &str {
    name.strip_suffix(ZSTD_SUFFIX).unwrap_or(name)
}

/// The length of every valid name: `wal-`, 16 digits, `-`, 16 digits, `.seg`.
const NAME_LEN: usize = PREFIX.len() + LSN_DIGITS + 1 + LSN_DIGITS + SUFFIX.len();

/// Four bytes as one number, to compare without a call to `memcmp`.
#[inline(always)]
fn word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Eight lowercase hex digits, read as a little-endian word (the first digit
/// in the lowest byte), as a number: eight bytes at a time, where a byte at
/// a time cost most of a 100,000-name scan in the component.
#[inline(always)]
fn hex8(x: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // With every byte below 0x80, these set a byte's high bit where the
    // byte is >= `lo` or <= `hi`, with no borrow between bytes. A byte at or
    // above 0x80 can borrow (hence wrapping), and is refused below anyway.
    let at_least = |lo: u64| (x | HIGH).wrapping_sub(lo * ONES) & HIGH;
    let at_most = |hi: u64| ((hi | 0x80) * ONES).wrapping_sub(x) & HIGH;
    let digit = at_least(b'0' as u64) & at_most(b'9' as u64);
    let letter = at_least(b'a' as u64) & at_most(b'f' as u64);
    if x & HIGH != 0 || digit | letter != HIGH {
        return None;
    }
    // '0'..'9' are 0x30..0x39 and 'a'..'f' are 0x61..0x66: the low nibble,
    // plus 9 where bit 6 is set.
    let v = (x & 0x0f0f_0f0f_0f0f_0f0f) + ((x >> 6) & ONES) * 9;
    // Pairs of digits into bytes, pairs of bytes into 16 bits, then 32.
    let v = ((v & 0x000f_000f_000f_000f) << 4) | ((v & 0x0f00_0f00_0f00_0f00) >> 8);
    let v = ((v & 0x0000_00ff_0000_00ff) << 8) | ((v & 0x00ff_0000_00ff_0000) >> 16);
    Some((((v & 0xffff) << 16) | ((v >> 32) & 0xffff)) as u32)
}

/// Sixteen lowercase hex digits as a number.
#[inline(always)]
fn hex16(digits: &[u8]) -> Option<u64> {
    let (hi, lo) = digits.split_at_checked(8)?;
    let hi = u64::from_le_bytes(hi.try_into().ok()?);
    let lo = u64::from_le_bytes(lo.try_into().ok()?);
    Some((u64::from(hex8(hi)?) << 32) | u64::from(hex8(lo)?))
}

/// An LSN field is exactly 16 bytes long; the error carries the length found.
fn check_length(field: &str) -> Result<(), NameError> {
    if field.len() != LSN_DIGITS {
        return Err(NameError::WrongLength(u32::try_from(field.len()).unwrap_or(u32::MAX)));
    }
    Ok(())
}

/// One LSN field: exactly 16 characters of `0-9a-f`. `u64::from_str_radix`
/// alone would also take `+`, uppercase and any length.
fn parse_lsn_field(field: &str) -> Result<Lsn, NameError> {
    check_length(field)?;
    field.bytes().try_fold(0u64, |acc, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return Err(NameError::NotLowercaseHex),
        };
        Ok((acc << 4) | u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_strict_form() {
        let n = SegmentName::parse("wal-000000000000000a-0000000000000064.seg").unwrap();
        assert_eq!((n.first(), n.last()), (10, 100));
    }

    #[test]
    fn accepts_u64_max_and_single_lsn_segments() {
        let n = SegmentName::parse("wal-ffffffffffffffff-ffffffffffffffff.seg").unwrap();
        assert_eq!((n.first(), n.last()), (u64::MAX, u64::MAX));
        let n = SegmentName::parse("wal-0000000000000000-0000000000000000.seg").unwrap();
        assert_eq!((n.first(), n.last()), (0, 0));
    }

    /// Every name the seed's `parse_segment_filename` accepted but must not.
    #[test]
    fn refuses_the_names_the_seed_accepted() {
        let cases: &[(&str, NameError)] = &[
            ("wal-0a-64.partial", NameError::WrongSuffix),
            ("wal-000000000000000a-0000000000000064.partial", NameError::WrongSuffix),
            ("wal-1-a.txt", NameError::WrongSuffix),
            ("wal-0a-64", NameError::WrongSuffix),
            ("wal-000000000000000a-0000000000000064", NameError::WrongSuffix),
            ("wal-000000000000000a-0000000000000064.seg.tmp", NameError::WrongSuffix),
            ("wal-+a-+64.seg", NameError::WrongLength(2)),
            ("wal-+00000000000000a-+000000000000064.seg", NameError::NotLowercaseHex),
            ("wal--00000000000000a-0000000000000064.seg", NameError::WrongShape),
            ("wal-A-FF.seg", NameError::WrongLength(1)),
            ("wal-000000000000000A-00000000000000FF.seg", NameError::NotLowercaseHex),
            ("wal-1-a.seg", NameError::WrongLength(1)),
            ("wal-0000000000000000000a-0000000000000064.seg", NameError::WrongLength(20)),
            ("wal-0000000000000064-000000000000000a.seg", NameError::FirstAfterLast),
            ("wal-64-0a.seg", NameError::WrongLength(2)),
            ("WAL-000000000000000a-0000000000000064.seg", NameError::MissingPrefix),
            ("data-0a-64.seg", NameError::MissingPrefix),
            ("wal-0a.seg", NameError::WrongShape),
            ("wal-.seg", NameError::WrongShape),
            ("wal-000000000000000a-0000000000000064-0000000000000065.seg", NameError::WrongShape),
            ("wal-000000000000000g-0000000000000064.seg", NameError::NotLowercaseHex),
            ("wal-00000000000000é-0000000000000064.seg", NameError::NotLowercaseHex),
            // Both fields' lengths are checked before either field's digits.
            ("wal-gggggggggggggggg-000000000000000.seg", NameError::WrongLength(15)),
            ("wal-AAAAAAAAAAAAAAAA-0000000000000000000a.seg", NameError::WrongLength(20)),
            ("wal-0000000000000001-gggggggggggggggg.seg", NameError::NotLowercaseHex),
            ("", NameError::MissingPrefix),
        ];
        for (name, want) in cases {
            assert_eq!(SegmentName::parse(name), Err(*want), "{name:?}");
        }
    }

    #[test]
    fn parses_the_object_names_it_formats_and_no_other_suffix() {
        for (first, last) in [(0, 0), (1, 16), (u64::MAX, u64::MAX)] {
            let seg = SegmentName::parse(&format_segment_name(first, last).unwrap()).unwrap();
            for c in [Compression::None, Compression::Zstd] {
                let o = ObjectName::new(seg, c);
                let text = o.to_string();
                assert_eq!(ObjectName::parse(&text), Ok(o), "{text}");
                assert_eq!(segment_part(&text), seg.to_string());
            }
        }
        let base = format_segment_name(1, 2).unwrap();
        for bad in [format!("{base}.gz"), format!("{base}.zst.zst"), format!("{base}.ZST"), format!("{base}zst"), ".zst".into()] {
            assert!(ObjectName::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(ObjectName::parse("wal-1-2.seg.zst"), Err(NameError::WrongLength(1)));
    }

    #[test]
    fn refuses_to_format_a_reversed_range() {
        assert_eq!(format_segment_name(2, 1), Err(NameError::FirstAfterLast));
    }

    proptest! {
        #[test]
        fn reads_sixteen_digits_and_refuses_any_other_byte(
            n: u64,
            at in 0..16usize,
            bad in prop::sample::select(b"/:@`gAFG- \x00\x7f\x80\xb0\xe1\xff".to_vec()),
        ) {
            let mut digits = format!("{n:016x}").into_bytes();
            prop_assert_eq!(hex16(&digits), Some(n));
            digits[at] = bad;
            prop_assert_eq!(hex16(&digits), None);
            prop_assert_eq!(hex16(&digits[..15]), None);
        }

        #[test]
        fn parse_inverts_format(a: u64, b: u64) {
            let (first, last) = (a.min(b), a.max(b));
            let name = format_segment_name(first, last).unwrap();
            let parsed = SegmentName::parse(&name).unwrap();
            prop_assert_eq!((parsed.first(), parsed.last()), (first, last));
            prop_assert_eq!(parsed.to_string(), name);
        }

        #[test]
        fn accepted_names_format_back_to_themselves(name in "wal-[0-9a-fA-F+-]{1,17}-[0-9a-f]{15,17}\\.(seg|partial)") {
            if let Ok(parsed) = SegmentName::parse(&name) {
                prop_assert_eq!(parsed.to_string(), name);
            }
        }
    }
}
