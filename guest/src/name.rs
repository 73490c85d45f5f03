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
        let rest = name.strip_prefix(PREFIX).ok_or(NameError::MissingPrefix)?;
        let fields = rest.strip_suffix(SUFFIX).ok_or(NameError::WrongSuffix)?;
        let (first, last) = fields.split_once('-').ok_or(NameError::WrongShape)?;
        if last.contains('-') {
            return Err(NameError::WrongShape);
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

/// One LSN field: exactly 16 characters of `0-9a-f`. `u64::from_str_radix`
/// alone would also take `+`, uppercase and any length.
fn parse_lsn_field(field: &str) -> Result<Lsn, NameError> {
    if field.len() != LSN_DIGITS {
        return Err(NameError::WrongLength(
            u32::try_from(field.len()).unwrap_or(u32::MAX),
        ));
    }
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
            ("", NameError::MissingPrefix),
        ];
        for (name, want) in cases {
            assert_eq!(SegmentName::parse(name), Err(*want), "{name:?}");
        }
    }

    #[test]
    fn refuses_to_format_a_reversed_range() {
        assert_eq!(format_segment_name(2, 1), Err(NameError::FirstAfterLast));
    }

    proptest! {
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
