//! The `generator` source: a deterministic keyed stream computed from a seed, so that the
//! exact result of a run is known in advance (tests) and benchmarks need no input files.
//!
//! Keys are `"k<id>"` with `id < keys`. Like a keyed producer writing to a partitioned topic,
//! a key only ever appears on the partition that owns it (`partition_of(key) == p`). Record `j`
//! of partition `p` has the global index `i = j * N + p`; its key is drawn from the keys owned by
//! `p` by `mix64(seed + i)` (uniform) or a Zipf sampler fed by the same function, and its value
//! is the decimal `mix64(i ^ VALUE_SALT) % 100`.

use std::time::Instant;

use cairn_contract::{GeneratorInput, KeyDistribution};

use super::{Poll, RecordBatch, Source, SourceError};
use crate::partition::{mix64, partition_of};

const VALUE_SALT: u64 = 0x5851_f42d_4c95_7f2d;
const TIME_SALT: u64 = 0x2545_f491_4f6c_dd1d;

/// The keys owned by each partition, built once per process.
pub struct KeyTable {
    by_partition: Vec<Vec<u64>>,
}

/// Below this many keys the table is built on the calling thread alone.
const PARALLEL_BUILD_KEYS: u64 = 1 << 20;

impl KeyTable {
    /// Routes every key id of the spec to its partition. Every process of a job builds it when
    /// it starts, before it restores anything, so it is part of every restart and every
    /// upgrade's pause: at 10M keys about 1.4 s in a pod on the project's machine, at 100M
    /// keys several seconds. Large tables are built in contiguous id ranges on the available
    /// cores and joined in range order, so each partition's ids stay ascending: the same table.
    pub fn build(spec: &GeneratorInput) -> Self {
        let started = Instant::now();
        let n = spec.partitions;
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(8) as u64;
        let route = |ids: std::ops::Range<u64>| {
            let mut by_partition = vec![Vec::new(); n as usize];
            let mut buf = Vec::with_capacity(24);
            for id in ids {
                key_into(&mut buf, id);
                by_partition[partition_of(&buf, n) as usize].push(id);
            }
            by_partition
        };
        if spec.keys < PARALLEL_BUILD_KEYS || threads == 1 {
            return KeyTable {
                by_partition: route(0..spec.keys),
            };
        }
        let chunk = spec.keys.div_ceil(threads);
        let parts: Vec<Vec<Vec<u64>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let ids = (t * chunk).min(spec.keys)..((t + 1) * chunk).min(spec.keys);
                    scope.spawn(move || route(ids))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("building the key table panicked"))
                .collect()
        });
        let by_partition = (0..n as usize)
            .map(|p| {
                let mut ids = Vec::with_capacity(parts.iter().map(|part| part[p].len()).sum());
                for part in &parts {
                    ids.extend_from_slice(&part[p]);
                }
                ids
            })
            .collect();
        tracing::info!(
            keys = spec.keys,
            threads,
            seconds = started.elapsed().as_secs_f64(),
            "generator key table built"
        );
        KeyTable { by_partition }
    }

    /// Key ids owned by partition `p`.
    pub fn keys_of(&self, p: u32) -> &[u64] {
        &self.by_partition[p as usize]
    }
}

/// Writes key `"k<id>"` into `buf` (cleared first).
pub fn key_into(buf: &mut Vec<u8>, id: u64) {
    buf.clear();
    buf.push(b'k');
    buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
}

/// The key id and value of record `j` of partition `p`: the definition of the stream, used by
/// the source and by anyone computing an expected result.
pub struct RecordRule<'a> {
    keys: &'a [u64],
    seed: u64,
    partitions: u64,
    partition: u64,
    zipf: Option<Zipf>,
    step_us: u64,
    disorder_ms: u64,
}

impl<'a> RecordRule<'a> {
    /// The rule of partition `p`.
    pub fn new(spec: &GeneratorInput, table: &'a KeyTable, p: u32) -> Self {
        let keys = table.keys_of(p);
        let zipf = match spec.distribution {
            KeyDistribution::Zipf if !keys.is_empty() => {
                Some(Zipf::new(keys.len() as u64, spec.zipf_exponent))
            }
            _ => None,
        };
        RecordRule {
            keys,
            seed: spec.seed,
            partitions: spec.partitions as u64,
            partition: p as u64,
            zipf,
            step_us: u64::try_from(spec.timestamp_step.as_micros()).unwrap_or(u64::MAX),
            disorder_ms: duration_ms(spec.timestamp_disorder),
        }
    }

    /// Event time of record `j` in ms: `j · timestampStep` (kept in microseconds, so dense
    /// streams of many records per millisecond are possible), moved back by a pseudo-random
    /// amount of at most `timestampDisorder` (not below 0).
    pub fn timestamp(&self, j: u64) -> u64 {
        let on_time = j.saturating_mul(self.step_us) / 1000;
        if self.disorder_ms == 0 {
            return on_time;
        }
        let i = j.wrapping_mul(self.partitions).wrapping_add(self.partition);
        let back = mix64(i ^ TIME_SALT) % (self.disorder_ms + 1);
        on_time.saturating_sub(back)
    }

    /// False when no key hashes to this partition (more partitions than keys).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// `(key id, value)` of record `j`.
    pub fn record(&self, j: u64) -> (u64, u64) {
        // Exact for every record a spec can ask for (`recordsPerPartition` is bounded so that
        // `j·N + p` fits); an endless input that ran past it wraps instead of panicking.
        let i = j.wrapping_mul(self.partitions).wrapping_add(self.partition);
        let r = mix64(self.seed.wrapping_add(i));
        let index = match &self.zipf {
            Some(z) => z.sample(r) - 1,
            None => r % self.keys.len() as u64,
        };
        (self.keys[index as usize], mix64(i ^ VALUE_SALT) % 100)
    }
}

/// One partition of the generator.
pub struct GeneratorSource {
    table: std::sync::Arc<KeyTable>,
    spec: GeneratorInput,
    partition: u32,
    next: u64,
    limit: Option<u64>,
    rate: Option<u64>,
    rate_origin: (Instant, u64),
    /// (key id, value) of the batch being made, reused.
    drawn: Vec<(u64, u64)>,
}

impl GeneratorSource {
    /// Partition `p` of `spec`, at offset 0.
    pub fn new(spec: &GeneratorInput, table: std::sync::Arc<KeyTable>, partition: u32) -> Self {
        let limit = if table.keys_of(partition).is_empty() {
            Some(0)
        } else {
            spec.records_per_partition
        };
        GeneratorSource {
            table,
            spec: spec.clone(),
            partition,
            next: 0,
            limit,
            rate: spec.rate_per_second.filter(|r| *r > 0),
            rate_origin: (Instant::now(), 0),
            drawn: Vec::new(),
        }
    }

    /// With a rate, the offset up to which records are due by now.
    fn due(&self) -> Option<u64> {
        let rate = self.rate?;
        let (t0, base) = self.rate_origin;
        // The float-to-integer cast saturates, and so does the sum.
        Some(base.saturating_add((t0.elapsed().as_secs_f64() * rate as f64) as u64))
    }
}

impl Source for GeneratorSource {
    fn poll(&mut self, batch: &mut RecordBatch, max: usize) -> Result<Poll, SourceError> {
        let mut end = self.next.saturating_add(max as u64);
        if let Some(limit) = self.limit {
            if self.next >= limit {
                return Ok(Poll::End);
            }
            end = end.min(limit);
        }
        if let Some(allowed) = self.due() {
            if allowed <= self.next {
                return Ok(Poll::Idle);
            }
            end = end.min(allowed);
        }
        let rule = RecordRule::new(&self.spec, &self.table, self.partition);
        // Two passes: drawing the keys first, in a loop of nothing else, lets the CPU overlap
        // the key table's cache misses (one per record at millions of keys), which the
        // formatting between them would otherwise serialise.
        self.drawn.clear();
        self.drawn.extend((self.next..end).map(|j| rule.record(j)));
        let mut digits = itoa::Buffer::new();
        for (j, &(id, value)) in (self.next..end).zip(&self.drawn) {
            batch.push_with(j, |buf| {
                let start = buf.len();
                buf.push(b'k');
                buf.extend_from_slice(digits.format(id).as_bytes());
                let key_len = buf.len() - start;
                buf.extend_from_slice(digits.format(value).as_bytes());
                key_len
            });
            batch.stamp_last(rule.timestamp(j));
        }
        self.next = end;
        Ok(Poll::Records)
    }

    fn position(&self) -> u64 {
        self.next
    }

    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        if let Some(limit) = self.limit {
            if offset > limit {
                return Err(SourceError::OffsetOutOfRange {
                    what: format!("generator partition {}", self.partition),
                    offset,
                    end: limit,
                });
            }
        }
        self.next = offset;
        self.rate_origin = (Instant::now(), offset);
        Ok(())
    }

    /// Records available but not read yet, as a broker's lag would be: with a rate, those due
    /// by now (the records a slow task falls behind by, which the autoscaler works from);
    /// without one, all that are left of a finite partition. An endless partition without a
    /// rate is never behind.
    fn lag(&self) -> Option<u64> {
        let available = match (self.due(), self.limit) {
            (Some(due), Some(limit)) => due.min(limit),
            (Some(due), None) => due,
            (None, Some(limit)) => limit,
            (None, None) => return None,
        };
        Some(available.saturating_sub(self.next))
    }
}

/// Whole milliseconds of a validated duration (at most a year, so it fits).
fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Zipf sampler over ranks `1..=n` by rejection-inversion (Hörmann and Derflinger), valid for
/// any exponent > 0; deterministic given the 63-bit random inputs it is fed.
pub struct Zipf {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    cut: f64,
}

impl Zipf {
    /// A sampler over `n >= 1` ranks with exponent `s > 0`.
    pub fn new(n: u64, s: f64) -> Self {
        let n = n as f64;
        let mut z = Zipf {
            n,
            s,
            h_x1: 0.0,
            h_n: 0.0,
            cut: 0.0,
        };
        z.h_x1 = z.big_h(1.5) - 1.0;
        z.h_n = z.big_h(n + 0.5);
        z.cut = 2.0 - z.big_h_inv(z.big_h(2.5) - z.h(2.0));
        z
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn big_h(&self, x: f64) -> f64 {
        let log_x = x.ln();
        expm1_over_x((1.0 - self.s) * log_x) * log_x
    }

    fn big_h_inv(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (log1p_over_x(t) * x).exp()
    }

    /// A rank in `1..=n` from a random `u63`; retries use further mixes of it.
    pub fn sample(&self, mut r: u64) -> u64 {
        loop {
            let unit = (r >> 10) as f64 / (1u64 << 53) as f64;
            let u = self.h_n + unit * (self.h_x1 - self.h_n);
            let x = self.big_h_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.cut || u >= self.big_h(k + 0.5) - self.h(k) {
                return k as u64;
            }
            r = mix64(r ^ 0x9e37_79b9_7f4a_7c15);
        }
    }
}

fn expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

fn log1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_contract::KeyDistribution;

    fn spec(keys: u64, n: u32, dist: KeyDistribution) -> GeneratorInput {
        GeneratorInput {
            partitions: n,
            seed: 7,
            keys,
            distribution: dist,
            zipf_exponent: 1.1,
            records_per_partition: Some(1000),
            rate_per_second: None,
            timestamp_step: std::time::Duration::from_micros(250),
            timestamp_disorder: std::time::Duration::from_millis(3),
        }
    }

    /// A table built in parallel (more keys than `PARALLEL_BUILD_KEYS`) is the one a single
    /// thread builds: every partition's ids, ascending.
    #[test]
    fn a_key_table_built_in_parallel_is_the_sequential_one() {
        let s = spec(PARALLEL_BUILD_KEYS + 12_345, 6, KeyDistribution::Uniform);
        let table = KeyTable::build(&s);
        let mut expected = vec![Vec::new(); 6];
        let mut buf = Vec::new();
        for id in 0..s.keys {
            key_into(&mut buf, id);
            expected[partition_of(&buf, 6) as usize].push(id);
        }
        for (p, ids) in expected.iter().enumerate() {
            assert_eq!(table.keys_of(p as u32), ids.as_slice(), "partition {p}");
        }
    }

    /// Timestamps advance by the step (in microseconds, rounded down to ms) and are moved back
    /// by at most the disorder, the same on every call.
    #[test]
    fn generated_timestamps_follow_the_step_within_the_disorder() {
        let s = spec(100, 2, KeyDistribution::Uniform);
        let table = KeyTable::build(&s);
        let rule = RecordRule::new(&s, &table, 1);
        let mut moved = 0;
        for j in 0..1000u64 {
            let on_time = j * 250 / 1000;
            let ts = rule.timestamp(j);
            assert!(
                ts <= on_time && on_time - ts <= 3,
                "record {j}: {ts} vs {on_time}"
            );
            moved += u32::from(ts != on_time);
            assert_eq!(ts, rule.timestamp(j));
        }
        assert!(moved > 500, "most records are out of order ({moved})");
        let mut in_order = s.clone();
        in_order.timestamp_disorder = std::time::Duration::ZERO;
        let rule = RecordRule::new(&in_order, &table, 1);
        assert_eq!(
            (
                rule.timestamp(0),
                rule.timestamp(3999),
                rule.timestamp(4000)
            ),
            (0, 999, 1000)
        );
    }

    #[test]
    fn keys_only_appear_on_their_own_partition_and_runs_repeat() {
        let s = spec(100, 4, KeyDistribution::Uniform);
        let table = std::sync::Arc::new(KeyTable::build(&s));
        for p in 0..4 {
            let mut src = GeneratorSource::new(&s, table.clone(), p);
            let mut batch = RecordBatch::default();
            batch.clear(p);
            while src.poll(&mut batch, 300).unwrap() == Poll::Records {}
            assert_eq!(batch.len(), 1000);
            for i in 0..batch.len() {
                let r = batch.get(i);
                assert_eq!(r.offset, i as u64);
                assert_eq!(partition_of(r.key, 4), p);
            }
            // Seeking replays the same records.
            let mut again = GeneratorSource::new(&s, table.clone(), p);
            again.seek(500).unwrap();
            let mut b2 = RecordBatch::default();
            b2.clear(p);
            again.poll(&mut b2, 10).unwrap();
            assert_eq!(b2.get(0).key, batch.get(500).key);
            assert_eq!(b2.get(0).value, batch.get(500).value);
        }
    }

    #[test]
    fn zipf_is_skewed_towards_low_ranks_and_in_range() {
        let z = Zipf::new(1000, 1.1);
        let mut counts = vec![0u32; 1001];
        for i in 0..100_000u64 {
            let k = z.sample(mix64(i));
            assert!((1..=1000).contains(&k));
            counts[k as usize] += 1;
        }
        assert!(counts[1] > counts[10] && counts[10] > counts[500]);
        assert!(
            counts[1] > 10_000,
            "rank 1 should take a large share, got {}",
            counts[1]
        );
    }

    #[test]
    fn seek_past_a_finite_end_is_an_error() {
        let s = spec(10, 1, KeyDistribution::Uniform);
        let mut src = GeneratorSource::new(&s, std::sync::Arc::new(KeyTable::build(&s)), 0);
        assert!(src
            .seek(1001)
            .unwrap_err()
            .to_string()
            .contains("beyond the end"));
    }

    /// A rate-limited partition's lag is what is due and not read yet, capped by its end; a
    /// finite one without a rate lags by all it has left; an endless one without a rate, never.
    #[test]
    fn lag_counts_the_records_available_and_not_read() {
        let table = std::sync::Arc::new(KeyTable::build(&spec(10, 1, KeyDistribution::Uniform)));
        let mut finite =
            GeneratorSource::new(&spec(10, 1, KeyDistribution::Uniform), table.clone(), 0);
        assert_eq!(finite.lag(), Some(1000));
        finite.seek(400).unwrap();
        assert_eq!(finite.lag(), Some(600));
        let mut rated = spec(10, 1, KeyDistribution::Uniform);
        rated.rate_per_second = Some(1_000_000);
        rated.records_per_partition = Some(50);
        let mut source = GeneratorSource::new(&rated, table.clone(), 0);
        source.rate_origin = (Instant::now() - std::time::Duration::from_secs(1), 0);
        assert_eq!(source.lag(), Some(50), "due beyond the end: capped by it");
        rated.records_per_partition = None;
        rated.rate_per_second = Some(100);
        let mut source = GeneratorSource::new(&rated, table.clone(), 0);
        source.rate_origin = (Instant::now() - std::time::Duration::from_secs(2), 0);
        let lag = source.lag().unwrap();
        assert!((200..=210).contains(&lag), "{lag}");
        source.next = 150;
        assert!((50..=60).contains(&source.lag().unwrap()));
        rated.rate_per_second = None;
        assert_eq!(GeneratorSource::new(&rated, table, 0).lag(), None);
    }
}
