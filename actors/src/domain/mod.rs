//! Domain types: parsed once at the edge, trusted everywhere after.

pub mod batch;
pub mod counts;
pub mod detect;
pub mod event;
pub mod level;
pub mod object;
pub mod resolve;
pub mod service;
#[cfg(test)]
mod shapes_tests;
pub mod syslog;
pub mod text;
pub mod timestamp;
pub mod tokens;
pub mod window;
pub mod window_stats;

pub use detect::detect_level;
pub use event::{Fallback, InputFormat, LogEvent, ParseRules, Reject, RejectReason};
pub use level::Level;
pub use object::Attrs;
pub use resolve::FieldNames;
pub use service::{NameError, ServiceName, UserId};
pub use tokens::{is_stop_word, tokenize, BadKeyword, Keyword, Tokens, STOP_WORDS};
pub use window::{Window, WindowError};
