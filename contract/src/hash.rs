//! A stable fingerprint of a job spec, recorded in savepoints so a restore can tell whether the
//! job it resumes was started from the same spec.
//!
//! The hash is FNV-1a (64-bit) over a canonical JSON text: object keys sorted, no whitespace,
//! durations and sizes in their canonical forms. It depends only on the spec's values, not on
//! key order or formatting in the source document, the platform, or serde_json's features (keys
//! are sorted here rather than relying on its map type). Changing the canonical form of any
//! field changes hashes, so treat it as a compatibility boundary.

use serde_json::Value;

use crate::job::JobSpec;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl JobSpec {
    /// The spec's fingerprint: 16 lowercase hex digits of FNV-1a-64 over its canonical JSON.
    ///
    /// Equal specs give equal hashes on every run and platform; any changed field changes it.
    pub fn spec_hash(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a job spec always serializes to JSON");
        // How a job starts is not what the job is.
        if let Value::Object(map) = &mut value {
            map.remove("restore");
        }
        fingerprint(&value)
    }
}

/// 16 lowercase hex digits of FNV-1a-64 over the canonical JSON of `value` (keys sorted, no
/// whitespace): the same fingerprint [`JobSpec::spec_hash`] uses, for other documents (the
/// operator hashes what a job's pods run with it).
pub fn fingerprint(value: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(value, &mut canonical);
    format!("{:016x}", fnv1a64(canonical.as_bytes()))
}

/// FNV-1a, 64-bit: small, fast, and fully specified, so it can be reimplemented anywhere.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// Writes `value` as compact JSON with object keys in byte order.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value: Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[true,null],"y":"s"}}"#).unwrap();
        let mut out = String::new();
        write_canonical(&value, &mut out);
        assert_eq!(out, r#"{"a":{"y":"s","z":[true,null]},"b":1}"#);
    }
}
