//! Synthetic load: realistic log events at a steady rate (GeneratorActor), reproducible by seed.

pub mod actor;
pub mod events;
pub mod rate;

pub use actor::{EventSink, GeneratorActor, GeneratorRun, GeneratorStats, RunLimit, SinkError, StopGenerator};
pub use events::{GeneratorConfig, LogGenerator};
pub use rate::TokenBucket;
