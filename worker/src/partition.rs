//! The one partitioning hash (architecture decision 2).
//!
//! Every key is routed to a partition with Kafka's default partitioner — murmur2 of the key
//! bytes with the top bit cleared, modulo the partition count — so that records produced to a
//! Kafka topic land on the same partition that owns their keyed state here. The same 31-bit
//! hash is stored as a big-endian prefix of every state key: changing the partition count
//! (N -> N') re-splits state by `hash % N'` without re-reading user keys, and a sorted scan of a
//! task's state visits keys grouped by hash.

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), bit-for-bit.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The 31-bit key hash: Kafka's `toPositive(murmur2(key))`.
pub fn key_hash(key: &[u8]) -> u32 {
    murmur2(key) & 0x7fff_ffff
}

/// The partition (0..partitions) that owns `key`.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    key_hash(key) % partitions
}

/// The partition that owns a key whose hash is already known (used when re-splitting state).
pub fn partition_of_hash(hash: u32, partitions: u32) -> u32 {
    hash % partitions
}

/// The splitmix/murmur3 64-bit finaliser with the top bit cleared, as the benchmark workload
/// defines it; the generator source derives its keys and values from it.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x & 0x7fff_ffff_ffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_reference_values() {
        // Reference values from the Kafka Java client's UtilsTest (murmur2 of these strings).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn partition_is_in_range_and_stable() {
        for n in [1u32, 3, 4, 6, 7, 64] {
            for i in 0..1000u32 {
                let key = format!("k{i}");
                let p = partition_of(key.as_bytes(), n);
                assert!(p < n);
                assert_eq!(p, partition_of_hash(key_hash(key.as_bytes()), n));
            }
        }
    }

    #[test]
    fn mix64_clears_top_bit_and_spreads() {
        assert_eq!(mix64(0), 0);
        let a = mix64(1);
        let b = mix64(2);
        assert_ne!(a, b);
        assert_eq!(a >> 63, 0);
        assert_eq!(mix64(u64::MAX) >> 63, 0);
    }
}
