//! Human-readable durations (`"1m30s"`) and byte sizes (`"64MiB"`).
//!
//! Job specs are written by people, so time and memory settings are written the way people say
//! them. Each value also has exactly one canonical written form ([`format_duration`],
//! [`format_size`]); the spec serializes through it, which keeps a YAML -> spec -> YAML -> spec
//! round trip the identity and gives [`crate::JobSpec::spec_hash`] a stable input.

use std::fmt;
use std::time::Duration;

/// A duration or size string that could not be read, with a message that says what to write.
///
/// The message is written to follow a field path, as in
/// `checkpoint.interval: "10 parsecs" is not a duration; write e.g. "10s", "500ms" or "2m"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// The fix appended to every duration error, kept in one place so all of them read the same.
const DURATION_HINT: &str = r#"write e.g. "10s", "500ms" or "2m""#;
/// The fix appended to every size error.
const SIZE_HINT: &str = r#"write e.g. "64MiB", "512KiB" or "1GiB""#;

fn duration_error(text: &str) -> UnitError {
    UnitError(format!("{text:?} is not a duration; {DURATION_HINT}"))
}

/// The longest duration any setting accepts: one year (`8760h`).
///
/// Intervals, timeouts and ages are multiplied and added to instants by the worker and the
/// operator; a bound far above any sensible setting keeps all of that arithmetic far from
/// overflow, so a hostile or mistyped value is a clear spec error instead of a panic or a
/// wrapped-around deadline. The CRD's CEL rules and the operator use the same bound.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn too_long(text: &str) -> UnitError {
    UnitError(format!(
        "{text:?} is longer than the maximum of {} (one year); write a shorter duration",
        format_duration(MAX_DURATION)
    ))
}

/// Accepts `duration` if it is at most [`MAX_DURATION`].
fn bounded(text: &str, duration: Duration) -> Result<Duration, UnitError> {
    if duration > MAX_DURATION {
        Err(too_long(text))
    } else {
        Ok(duration)
    }
}

fn size_error(text: &str) -> UnitError {
    UnitError(format!("{text:?} is not a size; {SIZE_HINT}"))
}

/// Nanoseconds per duration unit, largest first; the order [`format_duration`] tries them in.
/// Public so that the operator's CRD patterns accept exactly these units.
pub const DURATION_UNITS: [(&str, u128); 6] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a duration such as `"250ms"`, `"10s"`, `"5m"`, `"1h"` or `"1m30s"`.
///
/// Components (`h`, `m`, `s`, `ms`, and for completeness `us`/`µs` and `ns`) may be combined and
/// separated by spaces. A bare whole number means milliseconds, the unit Samza's `*.ms`
/// properties use. Fractions and negative values are rejected rather than rounded, and
/// anything longer than [`MAX_DURATION`] is refused.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(duration_error(text));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let millis: u64 = trimmed.parse().map_err(|_| too_long(text))?;
        return bounded(text, Duration::from_millis(millis));
    }
    let mut nanos: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(duration_error(text));
        }
        let amount: u128 = rest[..digits_end]
            .parse()
            .map_err(|_| duration_error(text))?;
        rest = rest[digits_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(duration_error(text)),
        };
        nanos = amount
            .checked_mul(scale)
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(|| too_long(text))?;
        rest = rest[unit_end..].trim_start();
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long(text))?;
    // The remainder is below one second, so it always fits in u32.
    let sub_nanos = (nanos % 1_000_000_000) as u32;
    bounded(text, Duration::new(secs, sub_nanos))
}

/// Writes a duration in its canonical form: one number with the largest unit that divides it
/// exactly (`60s` -> `"1m"`, `90s` -> `"90s"`, `250ms` -> `"250ms"`, zero -> `"0s"`).
///
/// [`parse_duration`] reads every output back to the same value.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, scale) in DURATION_UNITS {
        if nanos % scale == 0 {
            return format!("{}{unit}", nanos / scale);
        }
    }
    unreachable!("every duration is a whole number of nanoseconds")
}

/// Bytes per size unit for [`format_size`], binary units first so `64MiB` is not written as
/// `67108864`.
const SIZE_UNITS: [(&str, u64); 8] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];

/// Parses a byte size such as `"512"`, `"64KiB"`, `"64MiB"`, `"1GiB"` or `"64MB"`.
///
/// `KiB`/`MiB`/`GiB`/`TiB` (and the Kubernetes spellings `Ki`/`Mi`/`Gi`/`Ti`) are powers of
/// 1024; `KB`/`MB`/`GB`/`TB` (and `k`/`K`/`M`/`G`/`T`) are powers of 1000, as on disk labels.
/// Units are case-insensitive; a bare whole number, or one ending in `B`, means bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits_end == 0 {
        return Err(size_error(text));
    }
    let amount: u64 = trimmed[..digits_end]
        .parse()
        .map_err(|_| size_error(text))?;
    let scale: u64 = match trimmed[digits_end..]
        .trim_start()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(size_error(text)),
    };
    amount.checked_mul(scale).ok_or_else(|| {
        UnitError(format!(
            "{text:?} is too large: more than {} bytes",
            u64::MAX
        ))
    })
}

/// Writes a byte size in its canonical form: the largest binary unit that divides it exactly,
/// else the largest decimal one, else plain bytes (`67108864` -> `"64MiB"`, `2000000` ->
/// `"2MB"`, `1000` -> `"1KB"`, `513` -> `"513"`).
///
/// [`parse_size`] reads every output back to the same value.
pub fn format_size(bytes: u64) -> String {
    if bytes != 0 {
        for (unit, scale) in SIZE_UNITS {
            if bytes % scale == 0 {
                return format!("{}{unit}", bytes / scale);
            }
        }
    }
    bytes.to_string()
}

/// Serde adapter for [`Duration`] fields: reads [`parse_duration`] strings or whole milliseconds,
/// writes [`format_duration`] strings. Use as `#[serde(with = "crate::units::duration")]`.
pub(crate) mod duration {
    use super::{bounded, duration_error, format_duration, parse_duration, DURATION_HINT};
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(value: &Duration, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        de.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "a duration ({DURATION_HINT}) or a whole number of milliseconds"
            )
        }

        fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Duration, E> {
            bounded(&millis.to_string(), Duration::from_millis(millis)).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, millis: i64) -> Result<Duration, E> {
            match u64::try_from(millis) {
                Ok(millis) => self.visit_u64(millis),
                Err(_) => Err(E::custom(duration_error(&millis.to_string()))),
            }
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
            Err(E::custom(duration_error(&value.to_string())))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
}

/// Serde adapter for optional [`Duration`] fields (absent or `null`: `None`), with the syntax of
/// [`duration`]. Use with `#[serde(default, with = "crate::units::optional_duration")]`.
pub(crate) mod optional_duration {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => super::duration::serialize(duration, ser),
            None => ser.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(de).map(Some)
    }
}

/// Serde adapter for byte-size fields: reads [`parse_size`] strings or whole bytes, writes
/// [`format_size`] (a string with a unit, or a plain number when no unit divides the value).
pub(crate) mod size {
    use super::{format_size, parse_size, size_error, SIZE_HINT};
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(crate) fn serialize<S: Serializer>(bytes: &u64, ser: S) -> Result<S::Ok, S::Error> {
        let text = format_size(*bytes);
        if text.bytes().all(|b| b.is_ascii_digit()) {
            ser.serialize_u64(*bytes)
        } else {
            ser.serialize_str(&text)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
        de.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a size ({SIZE_HINT}) or a whole number of bytes")
        }

        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }

        fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<u64, E> {
            u64::try_from(bytes).map_err(|_| E::custom(size_error(&bytes.to_string())))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
            Err(E::custom(size_error(&value.to_string())))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse_size(text).map_err(E::custom)
        }
    }
}

/// Wraps a [`Duration`] so `{}` prints its canonical spec form; handy in log lines and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayDuration(pub Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_every_documented_form() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("1h 2m 3s 4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
        assert_eq!(parse_duration("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        for bad in ["10 parsecs", "", "s", "1.5s", "-3s", "1m30", "ten seconds"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("{bad:?} is not a duration; write e.g. \"10s\", \"500ms\" or \"2m\""),
            );
        }
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn durations_longer_than_a_year_are_refused() {
        // The audit's value: passed CEL and validation, then overflowed `interval * 3`.
        for long in [
            "1800000000000000h",
            "8761h",
            "8760h1ns",
            "31536000001",
            "99999999999999999999",
        ] {
            let err = parse_duration(long).unwrap_err().to_string();
            assert!(
                err.contains("longer than the maximum of 8760h"),
                "{long}: {err}"
            );
        }
        #[derive(serde::Deserialize, Debug)]
        struct Holder {
            #[serde(with = "duration")]
            #[allow(dead_code)]
            d: Duration,
        }
        let err = serde_json::from_str::<Holder>(r#"{"d": 18446744073709551615}"#).unwrap_err();
        assert!(err.to_string().contains("longer than the maximum"), "{err}");
        assert!(serde_json::from_str::<Holder>(r#"{"d": 31536000000}"#).is_ok());
    }

    #[test]
    fn durations_format_with_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_nanos(1_500)), "1500ns");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(
            DisplayDuration(Duration::from_millis(10)).to_string(),
            "10ms"
        );
        for millis in [1, 10, 999, 1000, 61_000, 3_600_001, 86_400_000] {
            let d = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("64 mib"), Ok(64 << 20));
    }

    #[test]
    fn bad_sizes_say_what_to_write() {
        for bad in ["lots", "", "MiB", "1.5GiB", "-1", "64 parsecs"] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("{bad:?} is not a size; write e.g. \"64MiB\", \"512KiB\" or \"1GiB\""),
            );
        }
        assert_eq!(
            parse_size("20000000TiB").unwrap_err().to_string(),
            "\"20000000TiB\" is too large: more than 18446744073709551615 bytes"
        );
    }

    #[test]
    fn sizes_format_canonically_and_read_back() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1024), "1KiB");
        assert_eq!(format_size(2_000_000), "2MB");
        assert_eq!(format_size(1000), "1KB");
        assert_eq!(format_size(513), "513");
        assert_eq!(format_size(0), "0");
        for bytes in [0, 1, 1000, 1024, 1536, 64 << 20, 3_000_000_000, u64::MAX] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }
}
