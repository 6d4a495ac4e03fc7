//! clokwerk reads the time through a type (`TimeProvider::now` takes no `self`), so the actor's
//! injected clock reaches it through a thread-local set around each call into the scheduler.

use std::cell::Cell;

use chrono::{DateTime, TimeZone, Utc};

thread_local! {
    static NOW: Cell<Option<DateTime<Utc>>> = const { Cell::new(None) };
}

/// The clokwerk time provider: the time set by `at`, else the system clock.
pub struct InjectedTime;

impl clokwerk::timeprovider::TimeProvider for InjectedTime {
    fn now<Tz>(tz: &Tz) -> DateTime<Tz>
    where
        Tz: TimeZone + Sync + Send,
    {
        NOW.with(Cell::get).unwrap_or_else(Utc::now).with_timezone(tz)
    }
}

/// Runs `f` with clokwerk seeing `now` as the time.
pub fn at<T>(now: DateTime<Utc>, f: impl FnOnce() -> T) -> T {
    NOW.with(|n| n.set(Some(now)));
    let result = f();
    NOW.with(|n| n.set(None));
    result
}
