//! Sizes as users write them: `4M`, `1G`, `65536` (1K = 1024, like QEMU's tools).

use std::num::IntErrorKind;

use thiserror::Error;

/// A size string that could not be understood.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid size '{input}': {reason}")]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

/// Parses a byte count with an optional K, M, G or T suffix (powers of 1024;
/// an optional trailing `B` or `iB` is accepted).
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        input: input.to_owned(),
        reason,
    };
    let Some((digits, shift)) = split_suffix(input) else {
        return Err(err("empty"));
    };
    let digits = digits.trim();
    if digits.starts_with('-') {
        return Err(err("a size cannot be negative"));
    }
    let value: u64 = match digits.parse() {
        Ok(value) => value,
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => return Err(err(TOO_LARGE)),
        Err(_) => {
            return Err(err(
                "expected a number with an optional K, M, G or T suffix",
            ));
        }
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| err(TOO_LARGE))
}

/// Splits a size into its digits (upper-cased, untrimmed inside) and the
/// shift of its K, M, G or T suffix (a trailing `B` or `iB` dropped); `None`
/// for an empty size.
pub fn split_suffix(input: &str) -> Option<(String, u32)> {
    let upper = input.trim().to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let shift = match upper.chars().last()? {
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return Some((upper.to_owned(), 0)),
    };
    Some((upper[..upper.len() - 1].to_owned(), shift))
}

/// Why a size beyond 64 bits is refused.
const TOO_LARGE: &str = "too large: sizes go up to 2^64 - 1 bytes (16 EiB)";

/// Formats a byte count the short way (`4M`, `1536K`, `100`).
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_style_sizes() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("4194304"), Ok(4_194_304));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("8MB"), Ok(8 << 20));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("4X").is_err());
    }

    #[test]
    fn says_why_a_number_is_refused() {
        let reason = |text| parse_size(text).unwrap_err().to_string();
        for too_large in ["99999999999999999999", "20000000T", "18446744073709551616"] {
            assert!(reason(too_large).ends_with(TOO_LARGE), "{too_large}");
        }
        assert!(reason("-1").ends_with("a size cannot be negative"));
        assert!(reason("-4M").ends_with("a size cannot be negative"));
        assert!(reason("4X").contains("expected a number"));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn formats_round_sizes_short() {
        assert_eq!(format_size(4 << 20), "4M");
        assert_eq!(format_size(1536 << 10), "1536K");
        assert_eq!(format_size(100), "100");
        assert_eq!(format_size(0), "0");
    }
}
