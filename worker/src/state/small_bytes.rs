//! [`SmallBytes`]: a byte string kept inline when it is short, for the keys and values of the
//! write-back cache.
//!
//! The cache is a hash map probed once per record at a random key. With boxed keys and values
//! each probe follows two pointers after the bucket, and on a cache of 100k keys each of those
//! is a cache (and TLB) miss. State keys (a 6-byte header and the user key) and the values of
//! counters and window lists are short: inline, the bucket holds them and the probe reads one
//! place.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};

/// Bytes held inline up to `N` long, on the heap beyond.
#[derive(Clone)]
pub enum SmallBytes<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Heap(Box<[u8]>),
}

impl<const N: usize> SmallBytes<N> {
    /// Whether `len` bytes are held inline (`N` is at most 255, the inline length field).
    const fn fits(len: usize) -> bool {
        len <= N && N <= u8::MAX as usize
    }
}

impl<const N: usize> From<&[u8]> for SmallBytes<N> {
    fn from(value: &[u8]) -> Self {
        if Self::fits(value.len()) {
            let mut bytes = [0u8; N];
            bytes[..value.len()].copy_from_slice(value);
            SmallBytes::Inline {
                len: value.len() as u8,
                bytes,
            }
        } else {
            SmallBytes::Heap(value.into())
        }
    }
}

impl<const N: usize> Deref for SmallBytes<N> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SmallBytes::Inline { len, bytes } => &bytes[..*len as usize],
            SmallBytes::Heap(b) => b,
        }
    }
}

impl<const N: usize> DerefMut for SmallBytes<N> {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            SmallBytes::Inline { len, bytes } => &mut bytes[..*len as usize],
            SmallBytes::Heap(b) => b,
        }
    }
}

// Hash and equality are those of the byte slice, as `Borrow<[u8]>` requires: the map is
// probed with a borrowed `&[u8]`, never with an owned key.
impl<const N: usize> Hash for SmallBytes<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl<const N: usize> PartialEq for SmallBytes<N> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<const N: usize> Eq for SmallBytes<N> {}

impl<const N: usize> Borrow<[u8]> for SmallBytes<N> {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl<const N: usize> AsRef<[u8]> for SmallBytes<N> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl<const N: usize> std::fmt::Debug for SmallBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashMap;

    #[test]
    fn short_and_long_bytes_read_back_and_are_found_by_slice() {
        let mut map: FxHashMap<SmallBytes<8>, u32> = FxHashMap::default();
        let samples: [&[u8]; 4] = [b"", b"abc", b"12345678", b"123456789"];
        for (i, s) in samples.iter().enumerate() {
            let b = SmallBytes::<8>::from(*s);
            assert_eq!(&*b, *s);
            assert_eq!(
                matches!(b, SmallBytes::Inline { .. }),
                s.len() <= 8,
                "{s:?}"
            );
            map.insert(b, i as u32);
        }
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(map.get(*s), Some(&(i as u32)), "{s:?}");
        }
        assert_eq!(map.get(&b"abd"[..]), None);
        let mut b = SmallBytes::<8>::from(&b"abc"[..]);
        b.copy_from_slice(b"xyz");
        assert_eq!(&*b, b"xyz");
    }

    #[test]
    fn an_inline_capacity_over_the_length_field_stays_on_the_heap() {
        let b = SmallBytes::<300>::from(&[7u8; 10][..]);
        assert!(matches!(b, SmallBytes::Heap(_)));
        assert_eq!(&*b, &[7u8; 10]);
    }
}
