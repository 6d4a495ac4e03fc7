//! Domain types: parsed once at the edge, trusted everywhere after.

pub mod event;
pub mod level;
pub mod service;
pub mod tokens;
pub mod window;

pub use event::{LogEvent, ParseRules, Reject, RejectReason};
pub use level::Level;
pub use service::{NameError, ServiceName, UserId};
pub use tokens::{is_stop_word, tokenize, BadKeyword, Keyword, STOP_WORDS};
pub use window::{Window, WindowError};
