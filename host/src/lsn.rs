//! LSN arguments on the command line (decimal, or hex with `0x`), and the
//! host's own reading of a segment name's LSNs, for the checks it makes on
//! the planner's plans.

/// Parses `1234` or `0x4d2`.
pub fn parse_lsn(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => u64::from_str_radix(hex, 16),
        Some(_) => return Err(format!("cannot parse LSN {text:?}: not hex after 0x")),
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse(),
        None => return Err(format!("cannot parse LSN {text:?}: not a decimal number or 0x hex")),
    };
    parsed.map_err(|e| format!("cannot parse LSN {text:?}: {e}"))
}

/// Formats an LSN for people: hex as in segment names, and decimal.
pub fn format_lsn(lsn: u64) -> String {
    format!("0x{lsn:016x} ({lsn})")
}

/// The LSNs of a segment name, read strictly: a name counts only when
/// formatting its LSNs gives it back exactly (the planner parses names; the
/// host uses this to check what a planner hands it).
pub fn segment_lsns(name: &str) -> Option<(u64, u64)> {
    let fields = name.strip_prefix("wal-")?.strip_suffix(".seg")?;
    let (first, last) = fields.split_once('-')?;
    let (first, last) = (u64::from_str_radix(first, 16).ok()?, u64::from_str_radix(last, 16).ok()?);
    (first <= last && format!("wal-{first:016x}-{last:016x}.seg") == name).then_some((first, last))
}

/// The LSNs of an object name: a segment name, or one with `.zst`.
pub fn object_lsns(name: &str) -> Option<(u64, u64)> {
    segment_lsns(crate::compress::segment_name(name))
}

/// The last LSN of an object name; see [`object_lsns`].
pub fn segment_last_lsn(name: &str) -> Option<u64> {
    object_lsns(name).map(|(_, last)| last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_decimal_and_hex() {
        assert_eq!(parse_lsn("1234"), Ok(1234));
        assert_eq!(parse_lsn("0x4d2"), Ok(1234));
        assert_eq!(parse_lsn("0xffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_lsn("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn refuses_signs_overflow_and_junk() {
        for bad in ["", "+1", "-1", "0x", "0x+1", "18446744073709551616", "0x10000000000000000", "12ab", " 1"] {
            assert!(parse_lsn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_only_strict_segment_names() {
        assert_eq!(segment_lsns("wal-000000000000000a-0000000000000064.seg"), Some((10, 100)));
        for bad in ["wal-a-64.seg", "wal-000000000000000A-0000000000000064.seg", "wal-+00000000000000a-0000000000000064.seg", "wal-0000000000000064-000000000000000a.seg", "notes.txt"] {
            assert_eq!(segment_lsns(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_what_it_formats() {
        for lsn in [0, 1, 0xdead_beef, u64::MAX] {
            let text = format_lsn(lsn);
            let hex = text.split(' ').next().unwrap();
            assert_eq!(parse_lsn(hex), Ok(lsn));
        }
    }
}
