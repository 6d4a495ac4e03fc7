//! The daily summary: what one day's events add up to per user and for the day (`DayCount`), and
//! reading a summarized day back (`SummaryReader`, the port the API asks).

mod count;

pub use count::{DayCount, DaySummary, UserSummary};

pub use crate::ports::summary::{SummarizedDay, SummaryReader, UserDay};
