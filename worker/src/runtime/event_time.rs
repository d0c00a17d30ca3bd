//! Event time of one task: the timestamp of each record, and the task's watermark.
//!
//! A task reads one input partition, so its watermark is its partition's: the highest
//! timestamp read so far minus `eventTime.maxOutOfOrderness`, minus 1 ms (every record with a
//! timestamp at or below the watermark is taken to have arrived). It only moves forward; it
//! is recorded in every checkpoint and savepoint and restored with the offsets, so a task
//! restored at an offset has the watermark the failure-free run had there. The watermark
//! moves per record, so which records are late does not depend on how reads are batched:
//! replaying the same input gives the same lateness and the same window results.
//!
//! Two things move it without a record, and both are documented as such in docs/windows.md:
//! the end of a finite input (the end of time: every window closes, as a drain does in other
//! stream processors), and `idleTimeout` (the clock stands in for a quiet partition's records;
//! which records are late then depends on timing, as in any stream processor). The end of time
//! is not what a checkpoint records: it records the watermark the records made, so a job
//! restored with a longer input goes on from there (the windows the end closed are emitted
//! already; records for them open them again).

use std::time::{Duration, Instant};

use cairn_contract::EventTimeSpec;

use crate::task::{fields, Record};

/// The watermark of an input that has ended: every event-time timer is due.
pub const END_OF_TIME: u64 = u64::MAX;

/// Where a record's timestamp comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TimestampRule {
    /// The input's own (Kafka's record timestamp, the generator's).
    Input,
    /// A top-level field of the JSON record value.
    Field(String),
}

/// One task's timestamps and watermark.
#[derive(Debug)]
pub struct EventClock {
    rule: TimestampRule,
    out_of_orderness: u64,
    idle_timeout: Option<Duration>,
    watermark: Option<u64>,
    highest: Option<u64>,
    last_record: Instant,
    ended: bool,
}

impl EventClock {
    /// The clock of a task of a job with `spec`, at the watermark `restored` (from the
    /// checkpoint or savepoint the task starts from; `None` for a fresh start).
    pub fn new(spec: &EventTimeSpec, restored: Option<u64>) -> Self {
        EventClock {
            rule: match &spec.timestamp_field {
                Some(field) => TimestampRule::Field(field.clone()),
                None => TimestampRule::Input,
            },
            out_of_orderness: millis(spec.max_out_of_orderness),
            idle_timeout: spec.idle_timeout,
            watermark: restored,
            highest: None,
            last_record: Instant::now(),
            ended: false,
        }
    }

    /// The timestamp of `record`, or why it has none (the record is bad).
    pub fn timestamp(&self, record: &Record<'_>) -> Result<u64, String> {
        match &self.rule {
            TimestampRule::Input => record.timestamp.ok_or_else(|| {
                "it has no timestamp of its own (a Kafka record from before 1970?); set \
                 eventTime.timestampField to read one from the value"
                    .to_owned()
            }),
            TimestampRule::Field(field) => {
                let ms = fields::json_integer(record.value, field)
                    .map_err(|e| format!("eventTime.timestampField: {e}"))?;
                u64::try_from(ms).map_err(|_| {
                    format!("eventTime.timestampField: {ms} is before the epoch (1970)")
                })
            }
        }
    }

    /// Takes in the timestamp of a record just processed; true if the watermark moved.
    pub fn observe(&mut self, timestamp: u64) -> bool {
        if self.highest.is_some_and(|h| h >= timestamp) {
            return false;
        }
        self.highest = Some(timestamp);
        self.advance_to(timestamp.checked_sub(self.out_of_orderness.saturating_add(1)))
    }

    /// The partition gave records at `now`: it is not idle. Once per batch, not per record (a
    /// clock read per record cost more than the rest of the event-time work).
    pub fn saw_records(&mut self, now: Instant) {
        self.last_record = now;
    }

    /// The partition had nothing to read at `now`; past `idleTimeout` the watermark follows
    /// the clock from where the last record left it. True if it moved.
    pub fn idle(&mut self, now: Instant) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        let quiet = now.saturating_duration_since(self.last_record);
        if quiet < timeout {
            return false;
        }
        let quiet_ms = millis(quiet);
        let candidate = match (self.highest, self.watermark) {
            (Some(highest), _) => highest
                .saturating_add(quiet_ms)
                .checked_sub(self.out_of_orderness.saturating_add(1)),
            (None, Some(watermark)) => Some(watermark.saturating_add(quiet_ms)),
            (None, None) => None,
        };
        self.advance_to(candidate)
    }

    /// The input ended: the end of time. True the first time.
    pub fn end(&mut self) -> bool {
        !std::mem::replace(&mut self.ended, true)
    }

    /// The watermark, once the task has one ([`END_OF_TIME`] once the input ended).
    pub fn watermark(&self) -> Option<u64> {
        if self.ended {
            Some(END_OF_TIME)
        } else {
            self.watermark
        }
    }

    /// The watermark a checkpoint records: the one the records made (and idleness).
    pub fn checkpointed(&self) -> Option<u64> {
        self.watermark
    }

    fn advance_to(&mut self, candidate: Option<u64>) -> bool {
        match candidate {
            Some(c) if self.watermark.is_none_or(|w| c > w) => {
                self.watermark = Some(c);
                true
            }
            _ => false,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(out_of_orderness_ms: u64) -> EventTimeSpec {
        EventTimeSpec {
            max_out_of_orderness: Duration::from_millis(out_of_orderness_ms),
            ..EventTimeSpec::default()
        }
    }

    #[test]
    fn the_watermark_trails_the_highest_timestamp_and_never_goes_back() {
        let mut clock = EventClock::new(&spec(10), None);
        assert!(!clock.observe(5), "5 - 10 - 1 is before any watermark");
        assert_eq!(clock.watermark(), None);
        assert!(clock.observe(100));
        assert_eq!(clock.watermark(), Some(89));
        assert!(!clock.observe(50), "an older record does not move it back");
        assert!(!clock.observe(100));
        assert!(clock.observe(101));
        assert_eq!(clock.watermark(), Some(90));
        assert!(clock.end());
        assert_eq!(clock.watermark(), Some(END_OF_TIME));
        assert_eq!(
            clock.checkpointed(),
            Some(90),
            "a checkpoint records the records' watermark"
        );
        assert!(!clock.end());
    }

    #[test]
    fn a_restored_watermark_holds_until_records_pass_it() {
        let mut clock = EventClock::new(&spec(0), Some(1000));
        assert!(!clock.observe(500));
        assert_eq!(clock.watermark(), Some(1000));
        assert!(clock.observe(2000));
        assert_eq!(clock.watermark(), Some(1999));
    }

    #[test]
    fn a_quiet_partition_follows_the_clock_only_past_the_idle_timeout() {
        let mut never = EventClock::new(&spec(0), None);
        never.observe(1000);
        assert!(!never.idle(Instant::now() + Duration::from_secs(3600)));

        let mut clock = EventClock::new(
            &EventTimeSpec {
                idle_timeout: Some(Duration::from_secs(5)),
                ..spec(0)
            },
            None,
        );
        clock.observe(1000);
        let t0 = Instant::now();
        clock.saw_records(t0);
        assert!(!clock.idle(t0 + Duration::from_secs(4)));
        assert!(clock.idle(t0 + Duration::from_secs(6)));
        assert_eq!(clock.watermark(), Some(1000 + 6000 - 1));
    }

    #[test]
    fn timestamps_come_from_the_input_or_a_field() {
        let record = |timestamp, value| Record {
            partition: 0,
            offset: 0,
            timestamp,
            key: b"k",
            value,
        };
        let input = EventClock::new(&spec(0), None);
        assert_eq!(input.timestamp(&record(Some(7), b"")), Ok(7));
        assert!(input.timestamp(&record(None, b"")).is_err());
        let field = EventClock::new(
            &EventTimeSpec {
                timestamp_field: Some("ts".into()),
                ..spec(0)
            },
            None,
        );
        assert_eq!(field.timestamp(&record(Some(7), br#"{"ts":9}"#)), Ok(9));
        assert!(field
            .timestamp(&record(None, br#"{"ts":-1}"#))
            .unwrap_err()
            .contains("before the epoch"));
        assert!(field.timestamp(&record(None, b"9")).is_err());
    }
}
