//! The grammar of option values every command shares, as clap value parsers:
//!
//! - durations: `500ms`, `2s`, `1.5s`, `10m`, `6h` (also `ns`, `us`, `min`); a bare
//!   number means seconds, so `--timeout 10` is ten seconds;
//! - sizes: `4096`, `64K`, `1M`, `2G`, `1T` (powers of 1024, an optional `B` or
//!   `iB` after the suffix), as QEMU's tools and `ivlink server --size` take them;
//! - counts, ids and vectors: decimal digits.
//!
//! A refused value gets a reason clap prints after the value and the option:
//! "not a number", "too large (at most 65535)", "negative", "unknown unit".

use std::time::Duration;

/// The longest duration taken (about 31 years), and what `inf` means where an
/// option may wait forever: longer than anyone waits, short enough to add to
/// any instant without overflow.
pub const FOREVER: Duration = Duration::from_secs(1_000_000_000);

/// The units a duration may carry and how many seconds each is.
const UNITS: [(&str, f64); 8] = [
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("min", 60.0),
    ("h", 3600.0),
];

/// What a duration looks like, for error messages.
const DURATION_FORM: &str = "expected e.g. 500ms, 2s, 10m or 6h (a bare number is seconds)";

/// Parses a duration: a number (fractions allowed) and an optional unit (`ns`,
/// `us`, `ms`, `s`, `m` or `min`, `h`); a bare number means seconds. Negative,
/// NaN and infinite values, and values above [`FOREVER`], are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (value, unit) = split_duration(text)?;
    let seconds_per_unit = match unit {
        None => 1.0,
        Some(unit) => UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, seconds)| seconds)
            .ok_or_else(|| {
                format!(
                    "unknown unit '{unit}': use ns, us, ms, s, m or h (a bare number is seconds)"
                )
            })?,
    };
    let seconds = value * seconds_per_unit;
    if seconds > FOREVER.as_secs_f64() {
        return Err(format!("too large (at most {}s)", FOREVER.as_secs()));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("not a duration: {DURATION_FORM}"))
}

/// Splits `12.5ms` into `12.5` and `Some("ms")`, refusing what is no finite,
/// non-negative number.
fn split_duration(text: &str) -> Result<(f64, Option<&str>), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty: {DURATION_FORM}"));
    }
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
        .unwrap_or(text.len());
    let (number, unit) = (text[..at].trim(), text[at..].trim());
    if number.is_empty() {
        return Err(format!("not a number: {DURATION_FORM}"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a number: {DURATION_FORM}"))?;
    if value < 0.0 {
        return Err("negative: a duration is 0 or more".to_owned());
    }
    Ok((value, (!unit.is_empty()).then_some(unit)))
}

/// Like [`parse_duration`], also taking `inf` (or `forever`) for [`FOREVER`]:
/// for waits that may last as long as it takes.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    match text.trim() {
        "inf" | "forever" => Ok(FOREVER),
        _ => parse_duration(text),
    }
}

/// Like [`parse_duration`] for an option that once took milliseconds: a bare
/// number other than 0 needs its unit, so an old `--interval 100` is refused
/// rather than read as 100 seconds.
pub fn parse_duration_was_ms(text: &str) -> Result<Duration, String> {
    needing_unit(text, "ms", "milliseconds")
}

/// Like [`parse_duration`] for an option that once took microseconds (see
/// [`parse_duration_was_ms`]).
pub fn parse_duration_was_us(text: &str) -> Result<Duration, String> {
    needing_unit(text, "us", "microseconds")
}

fn needing_unit(text: &str, unit: &str, old: &str) -> Result<Duration, String> {
    let (value, given) = split_duration(text)?;
    if given.is_none() && value != 0.0 {
        let number = text.trim();
        return Err(format!(
            "give a unit, e.g. {number}{unit} or {number}s: this option once took {old}, and a bare number now means seconds"
        ));
    }
    parse_duration(text)
}

/// Writes `duration` so that [`parse_duration`] reads it back exactly: `20s`,
/// `1500ms`, `50us`, `7ns`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    for (unit, per) in [("h", 3_600_000_000_000), ("m", 60_000_000_000)] {
        if nanos != 0 && nanos % per == 0 {
            return format!("{}{unit}", nanos / per);
        }
    }
    for (unit, per) in [("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)] {
        if nanos % per == 0 {
            return format!("{}{unit}", nanos / per);
        }
    }
    format!("{nanos}ns")
}

/// Parses a byte count with an optional K, M, G or T suffix (powers of 1024,
/// case-insensitive, an optional `B` or `iB` after it): the sizes QEMU's tools
/// and `ivlink server --size` take.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let Some((digits, shift)) = ivlink::size::split_suffix(text) else {
        return Err("empty: expected a size such as 4096, 64K or 1M".to_owned());
    };
    let value = parse_digits(digits.trim(), u64::MAX >> shift).map_err(|e| match e {
        Digits::NotANumber => {
            let rest = trimmed.trim_start_matches(|c: char| c.is_ascii_digit());
            if rest.starts_with('.') {
                "not a whole number of bytes (use 1536K, not 1.5M)".to_owned()
            } else if rest.len() < trimmed.len() {
                format!("unknown suffix '{rest}': use K, M, G or T (powers of 1024)")
            } else {
                "not a size: expected a number with an optional K, M, G or T suffix (4096, 64K, 1M)"
                    .to_owned()
            }
        }
        Digits::Negative => "negative: a size is 0 or more".to_owned(),
        Digits::TooLarge => format!("too large (at most {})", u64::MAX),
    })?;
    Ok(value << shift)
}

/// [`parse_size`] into a narrower type, refusing sizes it cannot hold.
pub fn parse_size_as<T: Unsigned>(text: &str) -> Result<T, String> {
    let size = parse_size(text)?;
    T::from_u64(size).ok_or_else(|| format!("too large (at most {})", T::MAX))
}

/// Parses a count, an id or a vector: decimal digits up to `T`'s largest value.
pub fn parse_uint<T: Unsigned>(text: &str) -> Result<T, String> {
    let value = parse_digits(text.trim(), T::MAX).map_err(|e| match e {
        Digits::NotANumber => "not a number: expected decimal digits".to_owned(),
        Digits::Negative => "negative: expected 0 or more".to_owned(),
        Digits::TooLarge => format!("too large (at most {})", T::MAX),
    })?;
    T::from_u64(value).ok_or_else(|| format!("too large (at most {})", T::MAX))
}

/// Why digits were refused.
enum Digits {
    NotANumber,
    Negative,
    TooLarge,
}

/// Reads decimal digits (an optional leading `+`) up to `max`.
fn parse_digits(text: &str, max: u64) -> Result<u64, Digits> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if text.strip_prefix('-').is_some_and(all_digits) {
        return Err(Digits::Negative);
    }
    let digits = text.strip_prefix('+').unwrap_or(text);
    if !all_digits(digits) {
        return Err(Digits::NotANumber);
    }
    // Only digits: the one way to fail is overflow.
    match digits.parse::<u64>() {
        Ok(value) if value <= max => Ok(value),
        _ => Err(Digits::TooLarge),
    }
}

/// Lets every option and positional of `command` and its subcommands take a
/// value that looks like a negative number, so that `--timeout -1` reaches the
/// parser and is refused as negative instead of being taken for a flag `-1`.
pub fn negative_numbers_as_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let takes_values = arg.get_action().takes_values();
            arg.allow_negative_numbers(takes_values)
        })
        .mut_subcommands(negative_numbers_as_values)
}

/// The unsigned integer types options are parsed into.
pub trait Unsigned: Sized + Clone + Send + Sync + 'static {
    /// The largest value, as a `u64`.
    const MAX: u64;
    /// `value` as this type, if it fits.
    fn from_u64(value: u64) -> Option<Self>;
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Unsigned for $t {
            const MAX: u64 = <$t>::MAX as u64;
            fn from_u64(value: u64) -> Option<Self> {
                <$t>::try_from(value).ok()
            }
        }
    )*};
}

unsigned!(u8, u16, u32, u64, usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_duration("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_duration("50µs"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 1.5 s "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_refuse_with_a_reason() {
        let refused = |text: &str| parse_duration(text).unwrap_err();
        assert!(
            refused("2x").starts_with("unknown unit 'x'"),
            "{}",
            refused("2x")
        );
        assert!(refused("5 parsecs").starts_with("unknown unit"));
        assert!(refused("-1").starts_with("negative"));
        assert!(refused("-1s").starts_with("negative"));
        assert!(refused("soon").starts_with("not a number"));
        assert!(refused("").starts_with("empty"));
        assert!(refused("1.2.3s").starts_with("not a number"));
        assert!(refused("inf").starts_with("not a number"));
        assert!(refused("NaN").starts_with("not a number"));
        assert!(refused("1e300").starts_with("unknown unit"));
        assert!(refused("99999999999").starts_with("too large (at most 1000000000s)"));
        assert!(refused("300000h").starts_with("too large"));
        assert_eq!(parse_duration("1000000000"), Ok(FOREVER));
    }

    #[test]
    fn waits_may_be_forever() {
        assert_eq!(parse_wait("inf"), Ok(FOREVER));
        assert_eq!(parse_wait("forever"), Ok(FOREVER));
        assert_eq!(parse_wait("30"), Ok(Duration::from_secs(30)));
        assert!(parse_wait("-inf").is_err());
    }

    #[test]
    fn options_that_took_milliseconds_need_a_unit() {
        assert_eq!(
            parse_duration_was_ms("100ms"),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(parse_duration_was_ms("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration_was_ms("0"), Ok(Duration::ZERO));
        let refused = parse_duration_was_ms("100").unwrap_err();
        assert!(
            refused.starts_with("give a unit, e.g. 100ms or 100s"),
            "{refused}"
        );
        assert!(refused.contains("milliseconds"), "{refused}");
        assert_eq!(parse_duration_was_us("50us"), Ok(Duration::from_micros(50)));
        assert!(parse_duration_was_us("50").unwrap_err().contains("50us"));
        assert!(
            parse_duration_was_us("-5us")
                .unwrap_err()
                .starts_with("negative")
        );
    }

    #[test]
    fn formatted_durations_read_back() {
        for (duration, text) in [
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(20), "20s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(50), "50us"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn sizes_take_binary_suffixes_as_the_server_does() {
        for text in [
            "4M", "1k", "2G", "1T", "4194304", "16MiB", "8MB", "0", " 64K ",
        ] {
            assert_eq!(
                parse_size(text),
                ivlink::size::parse_size(text).map_err(|e| e.to_string()),
                "{text}"
            );
        }
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        for text in [
            "",
            "M",
            "-1",
            "4X",
            "1Q",
            "-0",
            "1.5M",
            "99999999999999999999",
            "20000000T",
        ] {
            assert!(parse_size(text).is_err(), "{text}");
            assert!(ivlink::size::parse_size(text).is_err(), "{text}");
        }
    }

    #[test]
    fn sizes_refuse_with_a_reason() {
        let refused = |text: &str| parse_size(text).unwrap_err();
        assert!(
            refused("1Q").starts_with("unknown suffix 'Q'"),
            "{}",
            refused("1Q")
        );
        assert!(refused("1.5M").starts_with("not a whole number"));
        assert!(refused("abc").starts_with("not a size"));
        assert!(refused("-1").starts_with("negative"));
        assert!(refused("99999999999999999999").starts_with("too large"));
        assert!(refused("20000000T").starts_with("too large"));
        assert!(refused("").starts_with("empty"));
        assert_eq!(parse_size_as::<u32>("1M"), Ok(1u32 << 20));
        assert_eq!(
            parse_size_as::<u32>("4G").unwrap_err(),
            "too large (at most 4294967295)"
        );
    }

    #[test]
    fn counts_say_what_is_wrong() {
        assert_eq!(parse_uint::<u16>("65535"), Ok(65535));
        assert_eq!(parse_uint::<u16>("+7"), Ok(7));
        assert_eq!(
            parse_uint::<u16>("65536").unwrap_err(),
            "too large (at most 65535)"
        );
        assert_eq!(
            parse_uint::<u64>("99999999999999999999").unwrap_err(),
            format!("too large (at most {})", u64::MAX)
        );
        assert!(
            parse_uint::<u32>("x")
                .unwrap_err()
                .starts_with("not a number")
        );
        assert!(
            parse_uint::<u32>("1.5")
                .unwrap_err()
                .starts_with("not a number")
        );
        assert!(parse_uint::<u32>("-3").unwrap_err().starts_with("negative"));
        assert!(
            parse_uint::<usize>("")
                .unwrap_err()
                .starts_with("not a number")
        );
    }
}
