//! Numbers read from a record: its value as a decimal integer, or a top-level field of its
//! value as a JSON object. Shared by the event-time clock (`eventTime.timestampField`) and the
//! built-in window task (`valueField`); every failure is a reason a record is bad.

use serde_json::Value;

/// The record value as a decimal integer (surrounding whitespace allowed).
pub fn decimal(value: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| format!("the value {} is not a decimal integer", preview(value)))
}

/// The integer in top-level field `field` of the record value, a JSON object.
pub fn json_integer(value: &[u8], field: &str) -> Result<i64, String> {
    let object: serde_json::Map<String, Value> = serde_json::from_slice(value)
        .map_err(|_| format!("the value {} is not a JSON object", preview(value)))?;
    match object.get(field) {
        None => Err(format!("the value has no field {field:?}")),
        Some(v) => v.as_i64().ok_or_else(|| {
            format!("field {field:?} is {v}, not an integer between -2^63 and 2^63-1")
        }),
    }
}

/// The first 64 bytes of a value, for messages.
fn preview(value: &[u8]) -> String {
    format!(
        "{:?}",
        String::from_utf8_lossy(&value[..value.len().min(64)])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_or_refused_with_the_reason() {
        assert_eq!(decimal(b" 42\n"), Ok(42));
        assert!(decimal(b"4x")
            .unwrap_err()
            .contains("not a decimal integer"));
        assert_eq!(
            json_integer(br#"{"ts": 1700000000000, "v": 1}"#, "ts"),
            Ok(1_700_000_000_000)
        );
        assert!(json_integer(b"[1]", "ts")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(json_integer(br#"{"t": 1}"#, "ts")
            .unwrap_err()
            .contains("no field"));
        assert!(json_integer(br#"{"ts": 1.5}"#, "ts")
            .unwrap_err()
            .contains("not an integer"));
        assert!(json_integer(br#"{"ts": "1"}"#, "ts")
            .unwrap_err()
            .contains("not an integer"));
    }
}
