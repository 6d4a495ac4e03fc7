//! Where generated load goes (Kafka, a file, an HTTP endpoint).

use std::time::Duration;

/// Why a sink did not take a payload.
#[derive(Debug)]
pub enum SinkError {
    /// The sink's queue is full: offer the same payload again later.
    Full(Vec<u8>),
    /// The sink is broken.
    Failed(String),
}

/// Where generated payloads go (Kafka, a file, an HTTP endpoint).
pub trait EventSink: Send + 'static {
    /// Queues a payload; must not block.
    fn send(&mut self, payload: Vec<u8>, timestamp_ms: i64) -> Result<(), SinkError>;
    /// Serves delivery reports (non-blocking).
    fn poll(&mut self) {}
    /// Payloads the destination confirmed.
    fn acked(&self) -> u64;
    /// Payloads the destination received and refused as invalid (dead-lettered there).
    fn rejected(&self) -> u64 {
        0
    }
    /// Payloads that could not be delivered (after the sink's own retries).
    fn failed(&self) -> u64 {
        0
    }
    /// The first delivery error, for the run's summary.
    fn first_error(&self) -> Option<String> {
        None
    }
    /// Waits (blocking, up to `timeout`) until everything queued is delivered.
    fn flush(&mut self, timeout: Duration) -> Result<(), String>;
}
