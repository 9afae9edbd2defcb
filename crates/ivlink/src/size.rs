//! Sizes as users write them: `4M`, `1G`, `65536` (1K = 1024, like QEMU's tools).

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
    let trimmed = input.trim();
    let upper = trimmed.to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 10),
        Some('M') => (&upper[..upper.len() - 1], 20),
        Some('G') => (&upper[..upper.len() - 1], 30),
        Some('T') => (&upper[..upper.len() - 1], 40),
        Some(_) => (upper, 0),
        None => return Err(err("empty")),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| err("expected a number with an optional K, M, G or T suffix"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| err("too large"))
}

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
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("20000000T").is_err());
    }

    #[test]
    fn formats_round_sizes_short() {
        assert_eq!(format_size(4 << 20), "4M");
        assert_eq!(format_size(1536 << 10), "1536K");
        assert_eq!(format_size(100), "100");
        assert_eq!(format_size(0), "0");
    }
}
