//! Byte sizes in settings (`--batch-bytes 256MiB`): parsed from a number
//! with an optional binary unit, and formatted back exactly.

const UNITS: [(&str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];

/// Parses `268435456`, `268435456B`, `256MiB`, `64KiB` or `1GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!("cannot parse size {text:?}: it must start with a number"));
    }
    let scale = match unit {
        "" => 1,
        _ => match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, scale)) => *scale,
            None => {
                return Err(format!("cannot parse size {text:?}: unknown unit {unit:?} (B, KiB, MiB or GiB)"));
            }
        },
    };
    let n: u64 = number.parse().map_err(|e| format!("cannot parse size {text:?}: {e}"))?;
    n.checked_mul(scale).ok_or_else(|| format!("cannot parse size {text:?}: more than {} bytes", u64::MAX))
}

/// Formats a size in the largest unit that holds it exactly: `256MiB`.
pub fn format_size(bytes: u64) -> String {
    let (name, scale) = UNITS.iter().find(|(_, scale)| bytes != 0 && bytes.is_multiple_of(*scale)).copied().unwrap_or(("B", 1));
    format!("{}{name}", bytes / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_numbers_and_binary_units() {
        assert_eq!(parse_size("268435456"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn refuses_what_is_not_a_size_naming_it() {
        for text in ["", "MiB", "256 MiB", "256mb", "256M", "-1", "1.5GiB", "99999999999999999999", "17179869184GiB"] {
            let err = parse_size(text).unwrap_err();
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn formats_a_size_that_parses_back_to_itself() {
        for bytes in [0, 1, 1023, 1024, 1536, 256 << 20, (256 << 20) + 1, 1 << 30, 3 << 30, u64::MAX] {
            let text = format_size(bytes);
            assert_eq!(parse_size(&text), Ok(bytes), "{text}");
        }
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 10), "3KiB");
    }
}
