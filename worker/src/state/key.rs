//! The on-disk layout of a state key.
//!
//! `hash (4 bytes, big-endian) | key length (2 bytes, big-endian) | key | sub-key`
//!
//! The hash is the partitioning hash of the *key* (see [`crate::partition`]) so state can be
//! re-split by `hash % N'` with a sorted scan. The length makes every key a distinct prefix, so
//! all sub-keys of one key (a window, a timer, a list element) are stored together in sub-key
//! order and can be range-scanned.

use crate::partition::key_hash;

/// Length of the fixed prefix before the key bytes.
pub const HEADER_LEN: usize = 6;
/// Longest key a task may use (the length field is 16 bits).
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// Writes the encoded state key for (`key`, `sub`) into `out`, replacing its contents.
/// The caller rejects keys longer than [`MAX_KEY_LEN`] first ([`crate::state::KeyedState`]
/// returns `StateError::KeyTooLong`, which a task sees as a bad record): the 16-bit length
/// field cannot hold a longer one.
pub fn encode_into(out: &mut Vec<u8>, key: &[u8], sub: &[u8]) {
    encode_hashed_into(out, key_hash(key), key, sub);
}

/// [`encode_into`] with the key's partitioning hash already computed (`key_hash(key)`).
pub fn encode_hashed_into(out: &mut Vec<u8>, hash: u32, key: &[u8], sub: &[u8]) {
    out.clear();
    out.extend_from_slice(&hash.to_be_bytes());
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(sub);
}

/// The encoded prefix shared by every sub-key of `key`; `None` for a key longer than
/// [`MAX_KEY_LEN`], which has no state key.
pub fn prefix_of(key: &[u8]) -> Option<Vec<u8>> {
    if key.len() > MAX_KEY_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + key.len());
    encode_into(&mut out, key, &[]);
    Some(out)
}

/// A decoded state key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedKey<'a> {
    /// The partitioning hash stored in the prefix.
    pub hash: u32,
    /// The user key.
    pub key: &'a [u8],
    /// The sub-key (empty for plain keyed values).
    pub sub: &'a [u8],
}

/// Splits an encoded state key; `None` if it is too short to be one of ours.
pub fn decode(encoded: &[u8]) -> Option<DecodedKey<'_>> {
    if encoded.len() < HEADER_LEN {
        return None;
    }
    let hash = u32::from_be_bytes(encoded[0..4].try_into().ok()?);
    let len = u16::from_be_bytes(encoded[4..6].try_into().ok()?) as usize;
    let rest = &encoded[HEADER_LEN..];
    if rest.len() < len {
        return None;
    }
    Some(DecodedKey {
        hash,
        key: &rest[..len],
        sub: &rest[len..],
    })
}

/// The partitioning hash of an encoded key, read from its prefix.
pub fn hash_of(encoded: &[u8]) -> Option<u32> {
    encoded
        .get(0..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prefix_grouping() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"user-7", b"\x00\x01");
        let d = decode(&buf).unwrap();
        assert_eq!(d.key, b"user-7");
        assert_eq!(d.sub, b"\x00\x01");
        assert_eq!(d.hash, key_hash(b"user-7"));
        assert!(buf.starts_with(&prefix_of(b"user-7").unwrap()));
        // A key that is a string prefix of another is not a state-key prefix of it.
        let mut other = Vec::new();
        encode_into(&mut other, b"user-70", b"");
        assert!(!other.starts_with(&prefix_of(b"user-7").unwrap()));
        assert_eq!(hash_of(&buf), Some(key_hash(b"user-7")));
    }

    #[test]
    fn a_key_over_the_length_field_has_no_prefix() {
        assert_eq!(
            prefix_of(&[b'k'; MAX_KEY_LEN]).map(|p| p.len()),
            Some(HEADER_LEN + MAX_KEY_LEN)
        );
        assert_eq!(prefix_of(&[b'k'; MAX_KEY_LEN + 1]), None);
    }

    #[test]
    fn short_input_is_not_a_key() {
        assert!(decode(b"abc").is_none());
        assert!(decode(&[0, 0, 0, 0, 0, 9, b'a']).is_none());
    }
}
