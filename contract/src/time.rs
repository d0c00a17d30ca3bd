//! The `eventTime:` section: where each record's timestamp comes from and how the watermark
//! (the event time up to which the input is taken to be complete) follows the timestamps.
//!
//! Without the section a job has no event time: its tasks see no record timestamps and only
//! processing-time timers fire. See docs/windows.md.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest `eventTime.timestampField`.
pub const MAX_TIMESTAMP_FIELD_LEN: usize = 256;

/// Event time of a job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EventTimeSpec {
    /// The top-level field of a JSON record value holding the record's timestamp, in
    /// milliseconds since the Unix epoch. Absent: the input's own timestamp (a Kafka record's
    /// timestamp, the generator's generated one); file input has none and needs this field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_field: Option<String>,
    /// How far behind the highest timestamp seen a record may still arrive without being late:
    /// the watermark of a partition is the highest timestamp it has read minus this, minus
    /// 1 ms (default 0: the input is in timestamp order).
    #[serde(with = "crate::units::duration")]
    pub max_out_of_orderness: Duration,
    /// When a partition has read nothing for this long (processing time), its watermark moves
    /// on with the clock as if records kept arriving, so windows of a quiet partition close.
    /// Absent (the default): a quiet partition's watermark waits for its next record.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::units::optional_duration"
    )]
    pub idle_timeout: Option<Duration>,
}
