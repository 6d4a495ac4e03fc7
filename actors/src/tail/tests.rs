use chrono::{TimeZone, Utc};

use super::*;
use crate::domain::{Fallback, Level, LogEvent, ParseRules};
use crate::search::SearchParams;

fn due(partition: i32, offsets: Range<i64>, announced_only: bool) -> Option<Due> {
    Some(Due { topic: "logs".into(), partition, offsets, announced_only })
}

#[test]
fn a_partition_first_heard_of_starts_at_its_announcement() {
    let mut p = Progress::default();
    assert_eq!(p.stored("logs", 0, 40, 50), due(0, 40..50, true));
    assert_eq!(p.next("logs", 0), Some(50));
    assert_eq!(p.stored("logs", 0, 50, 60), due(0, 50..60, true));
    // Partitions and topics are kept apart.
    assert_eq!(p.stored("logs", 1, 0, 5), due(1, 0..5, true));
    assert_eq!(
        p.stored("other", 0, 7, 8),
        Some(Due { topic: "other".into(), partition: 0, offsets: 7..8, announced_only: true })
    );
    assert_eq!(p.next("logs", 0), Some(60));
}

#[test]
fn nothing_is_published_twice() {
    let mut p = Progress::default();
    p.stored("logs", 0, 0, 10);
    // The same announcement again, and an older one: nothing.
    assert_eq!(p.stored("logs", 0, 0, 10), None);
    assert_eq!(p.stored("logs", 0, 3, 8), None);
    // Overlapping: only the new part.
    assert_eq!(p.stored("logs", 0, 5, 15), due(0, 10..15, true));
    // Resuming at or below what was published reads nothing.
    assert_eq!(p.resume("logs", 0, 15), None);
    assert_eq!(p.resume("logs", 0, 12), None);
    assert_eq!(p.next("logs", 0), Some(15));
}

#[test]
fn a_missed_announcement_is_read_as_a_gap_with_the_next_one() {
    let mut p = Progress::default();
    p.stored("logs", 0, 0, 10);
    // [10, 20) was announced while nobody listened: read from 10, beyond the announcement's times.
    assert_eq!(p.stored("logs", 0, 20, 30), due(0, 10..30, false));
    assert_eq!(p.next("logs", 0), Some(30));
}

#[test]
fn resuming_catches_up_on_what_was_stored_unheard_and_starts_new_partitions_there() {
    let mut p = Progress::default();
    // Before the first client: the stored position is where publishing starts, nothing replayed.
    assert_eq!(p.resume("logs", 0, 100), None);
    assert_eq!(p.next("logs", 0), Some(100));
    assert_eq!(p.stored("logs", 0, 100, 110), due(0, 100..110, true));
    // The listener reconnected; meanwhile the partition moved to 130.
    assert_eq!(p.resume("logs", 0, 130), due(0, 110..130, false));
    // An announcement of what the catch-up read already is not read again.
    assert_eq!(p.stored("logs", 0, 120, 130), None);
    assert_eq!(p.stored("logs", 0, 130, 131), due(0, 130..131, true));
}

#[test]
fn a_failed_read_is_read_again() {
    let mut p = Progress::default();
    p.stored("logs", 0, 0, 10);
    p.stored("logs", 0, 10, 20);
    // Publishing [10, 20) failed at 14: the catch-up after reconnecting reads from 14.
    p.rewind("logs", 0, 14);
    assert_eq!(p.resume("logs", 0, 25), due(0, 14..25, false));
    // Rewinding never moves forward.
    p.rewind("logs", 0, 99);
    assert_eq!(p.next("logs", 0), Some(25));
}

fn event(line: &str) -> LogEvent {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
    LogEvent::parse(line.as_bytes(), Fallback::kafka(Some(now), "logs"), now, &ParseRules::default())
        .expect("a valid line")
}

fn filter(q: &'static str, level: Option<&'static str>) -> Filter {
    SearchParams { q: Some(q), level, ..SearchParams::default() }.filter().unwrap()
}

fn publish(hub: &TailHub, offset: i64, line: &str) {
    let e = event(line);
    let found = FoundEvent::of("logs", 0, offset, &e);
    let tokens: Vec<&str> = e.tokens.iter().collect();
    hub.publish(&found, &tokens);
}

fn limits(buffer_events: usize, max_clients: usize) -> TailLimits {
    TailLimits { buffer_events, max_clients }
}

async fn offsets(sub: &TailSubscription, n: usize) -> Vec<i64> {
    let mut got = Vec::new();
    for _ in 0..n {
        match sub.next().await {
            TailItem::Event(e) => {
                let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                got.push(v["offset"].as_i64().unwrap());
            }
            TailItem::Cut => panic!("cut"),
        }
    }
    got
}

#[tokio::test]
async fn each_client_gets_what_its_filter_matches() {
    let hub = TailHub::new(limits(10, 4));
    let timeouts = hub.subscribe(filter("timeout", None)).unwrap();
    let errors = hub.subscribe(filter("", Some("error"))).unwrap();
    publish(&hub, 1, r#"{"level":"error","message":"db timeout"}"#);
    publish(&hub, 2, r#"{"level":"info","message":"ok"}"#);
    publish(&hub, 3, r#"{"level":"info","message":"timeout again"}"#);
    publish(&hub, 4, r#"{"level":"error","message":"refused"}"#);
    assert_eq!(offsets(&timeouts, 2).await, [1, 3]);
    assert_eq!(offsets(&errors, 2).await, [1, 4]);
    assert_eq!(hub.stats.delivered.load(Ordering::Relaxed), 4);
    let TailItem::Event(e) = ({
        publish(&hub, 5, r#"{"level":"error","message":"timeout","service":"api"}"#);
        timeouts.next().await
    }) else {
        panic!("cut")
    };
    assert_eq!(e.id, "logs/0/5");
    let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
    assert_eq!((v["service"].as_str(), v["level"].as_str()), (Some("api"), Some(Level::Error.as_str())));
}

#[tokio::test]
async fn a_client_that_falls_a_whole_buffer_behind_is_cut_and_frees_its_place() {
    let hub = TailHub::new(limits(3, 2));
    let slow = hub.subscribe(filter("", None)).unwrap();
    let fast = hub.subscribe(filter("", None)).unwrap();
    assert!(matches!(hub.subscribe(filter("", None)), Err(TailFull { connected: 2 })));
    for offset in 0..3 {
        publish(&hub, offset, "line");
        assert_eq!(offsets(&fast, 1).await, [offset]);
    }
    assert_eq!(hub.clients(), 2);
    // The fourth event finds the slow client's queue full.
    publish(&hub, 3, "line");
    assert!(matches!(slow.next().await, TailItem::Cut));
    assert!(matches!(slow.next().await, TailItem::Cut), "a cut client gets nothing more");
    assert_eq!(hub.clients(), 1);
    assert_eq!(hub.stats.cut.load(Ordering::Relaxed), 1);
    assert_eq!(offsets(&fast, 1).await, [3]);
    // Its place is free for another client; the cut one's leaving changes nothing.
    let _next = hub.subscribe(filter("", None)).unwrap();
    drop(slow);
    assert_eq!(hub.clients(), 2);
    drop(fast);
    assert_eq!(hub.clients(), 1);
}

#[tokio::test]
async fn the_feed_starts_with_the_first_client_only() {
    let started = Arc::new(AtomicU64::new(0));
    let count = started.clone();
    let hub = TailHub::with_feed(
        limits(3, 2),
        Some(Box::new(move |_hub| {
            count.fetch_add(1, Ordering::Relaxed);
        })),
    );
    assert_eq!(started.load(Ordering::Relaxed), 0);
    let a = hub.subscribe(filter("", None)).unwrap();
    drop(a);
    let _b = hub.subscribe(filter("", None)).unwrap();
    assert_eq!(started.load(Ordering::Relaxed), 1);
}
