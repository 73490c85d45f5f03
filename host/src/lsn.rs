//! LSN arguments on the command line: decimal, or hex with `0x`.

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
    fn parses_what_it_formats() {
        for lsn in [0, 1, 0xdead_beef, u64::MAX] {
            let text = format_lsn(lsn);
            let hex = text.split(' ').next().unwrap();
            assert_eq!(parse_lsn(hex), Ok(lsn));
        }
    }
}
