//! The live tail's feed on PostgreSQL: every ingest process's writer announces each committed batch
//! (`pg_notify` inside the batch's transaction, so the announcement exists only once the rows do,
//! and arrives in commit order); one listener per serving process hears them all, reads the rows of
//! each announced range back once and publishes them to the process's [`TailHub`].
//!
//! Each partition's offsets are contiguous and fenced (exactly once into `logs`), so the listener's
//! [`Progress`] per partition is enough to publish every stored event once: an announcement below it
//! is skipped, one beyond it (announcements missed while the connection was down) is read from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actors::search::FoundEvent;
use actors::tail::{Due, FeedStarter, Progress, TailHub};

use crate::search_rows::EventRow;
use futures::StreamExt;
use slog::{info, warn, Logger};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The channel writers announce on (per database, as NOTIFY is).
pub const CHANNEL: &str = "log_analyzer_stored";

/// Rows read per query while publishing a range: a long catch-up is read in steps.
const READ_STEP: i64 = 2_000;

/// A committed batch as announced: `<topic> <partition> <from> <to> <min ts µs|-> <max ts µs|->`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    /// The event times of the batch's rows (none: the batch held only dead letters): the read is
    /// bounded by them so that it touches only the days' partitions that hold them.
    pub ts_micros: Option<(i64, i64)>,
}

impl Announcement {
    pub fn payload(&self) -> String {
        let (min, max) = match self.ts_micros {
            Some((min, max)) => (min.to_string(), max.to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        format!("{} {} {} {} {min} {max}", self.topic, self.partition, self.from, self.to)
    }

    pub fn parse(payload: &str) -> Option<Announcement> {
        let mut fields = payload.split(' ');
        let topic = fields.next().filter(|t| !t.is_empty())?.to_owned();
        let partition = fields.next()?.parse().ok()?;
        let from = fields.next()?.parse().ok()?;
        let to = fields.next()?.parse().ok()?;
        let ts_micros = match (fields.next()?, fields.next()?) {
            ("-", "-") => None,
            (min, max) => Some((min.parse().ok()?, max.parse().ok()?)),
        };
        fields.next().is_none().then_some(Announcement { topic, partition, from, to, ts_micros })
    }

    /// Adds a later (or earlier) batch of the same partition: batches are contiguous, so the union
    /// of their ranges is one range.
    fn merge(&mut self, other: Announcement) {
        self.from = self.from.min(other.from);
        self.to = self.to.max(other.to);
        self.ts_micros = match (self.ts_micros, other.ts_micros) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, other) => one.or(other),
        };
    }
}

/// Announcements heard but not yet read, merged per partition: memory stays one entry per
/// partition however far the reading lags.
#[derive(Default)]
struct Heard {
    pending: Mutex<HashMap<(String, i32), Announcement>>,
    wake: Notify,
}

impl Heard {
    fn add(&self, a: Announcement) {
        let mut pending = self.pending.lock().expect("heard announcements");
        match pending.get_mut(&(a.topic.clone(), a.partition)) {
            Some(known) => known.merge(a),
            None => {
                pending.insert((a.topic.clone(), a.partition), a);
            }
        }
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<Announcement> {
        let mut taken: Vec<Announcement> =
            std::mem::take(&mut *self.pending.lock().expect("heard announcements")).into_values().collect();
        taken.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        taken
    }
}

/// What starts the listener when the first tail client connects.
pub fn feed(url: String, topics: Vec<String>, log: Logger) -> FeedStarter {
    Box::new(move |hub: Arc<TailHub>| {
        let hub = Arc::downgrade(&hub);
        actix_rt::spawn(listen(url, topics, hub, log));
    })
}

/// Listens for as long as the hub lives, reconnecting after a lost connection (what was committed
/// meanwhile is read from the stored positions on the way back).
async fn listen(url: String, topics: Vec<String>, hub: Weak<TailHub>, log: Logger) {
    let mut progress = Progress::default();
    let mut pause = Duration::from_millis(100);
    loop {
        match session(&url, &topics, &hub, &mut progress, &log).await {
            Ok(()) => return,
            Err(e) => {
                warn!(log, "tail listener lost PostgreSQL; reconnecting"; "error" => e, "pause_ms" => pause.as_millis());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
        if hub.strong_count() == 0 {
            return;
        }
    }
}

/// One connection's life: LISTEN, catch up from the stored positions, then publish what is heard.
/// Ends with `Ok` only when the hub is gone.
async fn session(
    url: &str,
    topics: &[String],
    hub: &Weak<TailHub>,
    progress: &mut Progress,
    log: &Logger,
) -> Result<(), String> {
    let text = |e: tokio_postgres::Error| crate::telemetry::error_chain(&e);
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.map_err(text)?;
    let heard = Arc::new(Heard::default());
    let ears = heard.clone();
    let channel_log = log.clone();
    actix_rt::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => match Announcement::parse(n.payload()) {
                    Some(a) => ears.add(a),
                    None => {
                        warn!(channel_log, "tail: an announcement this version does not read"; "payload" => n.payload())
                    }
                },
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // The client sees the connection closed; wake the reader so it notices.
        ears.wake.notify_one();
    });
    // Listening first, then reading the positions: a batch committed in between is both announced
    // and below the position, and Progress publishes it once.
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(text)?;
    let stored = client
        .query("SELECT topic, \"partition\", next_offset FROM kafka_offsets WHERE topic = ANY($1)", &[&topics])
        .await
        .map_err(text)?;
    info!(log, "tail listener started"; "channel" => CHANNEL, "partitions" => stored.len());
    for row in stored {
        let (topic, partition, next): (String, i32, i64) = (row.get(0), row.get(1), row.get(2));
        if let Some(due) = progress.resume(&topic, partition, next) {
            publish_due(&client, hub, progress, &due, None, log).await?;
        }
    }
    loop {
        if hub.strong_count() == 0 {
            return Ok(());
        }
        if client.is_closed() {
            return Err("the LISTEN connection closed".to_owned());
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), heard.wake.notified()).await;
        for a in heard.take() {
            if !topics.contains(&a.topic) {
                continue;
            }
            if let Some(due) = progress.stored(&a.topic, a.partition, a.from, a.to) {
                let bounds = a.ts_micros.filter(|_| due.announced_only);
                publish_due(&client, hub, progress, &due, bounds, log).await?;
            }
        }
    }
}

/// Reads the rows of `due` and publishes them; with no client connected, only moves on. On a
/// failed read the partition's progress goes back to the first offset not published, so the next
/// session reads the rest.
async fn publish_due(
    client: &Client,
    hub: &Weak<TailHub>,
    progress: &mut Progress,
    due: &Due,
    ts_micros: Option<(i64, i64)>,
    log: &Logger,
) -> Result<(), String> {
    let Some(hub) = hub.upgrade() else { return Ok(()) };
    if !hub.has_clients() {
        return Ok(());
    }
    let mut start = due.offsets.start;
    while start < due.offsets.end {
        match read_rows(client, due, start, ts_micros).await {
            Ok((rows, last)) => {
                let read = rows.len() as i64;
                for row in rows {
                    match row {
                        Ok((event, tokens)) => {
                            let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
                            hub.publish(&event, &tokens);
                        }
                        // A corrupt row (a level outside 0..=5 or attrs that are not JSON: only a
                        // table written around the schema's CHECK holds one) is not shown with a
                        // made-up level or attrs, and holds nothing after it back.
                        Err(corrupt) => warn!(log, "live tail skipped a stored row"; "error" => corrupt),
                    }
                }
                match last {
                    Some(last) if read == READ_STEP => start = last + 1,
                    _ => break,
                }
            }
            Err(e) => {
                progress.rewind(&due.topic, due.partition, start);
                return Err(crate::telemetry::error_chain(&e));
            }
        }
    }
    Ok(())
}

/// A stored event and its tokens, or why its row cannot be shown.
type Row = Result<(FoundEvent, Vec<String>), String>;

async fn read_rows(
    client: &Client,
    due: &Due,
    start: i64,
    ts_micros: Option<(i64, i64)>,
) -> Result<(Vec<Row>, Option<i64>), tokio_postgres::Error> {
    let columns = format!(
        "SELECT {}, tokens FROM logs WHERE topic = $1 AND \"partition\" = $2 AND \"offset\" >= $3 AND \"offset\" < $4",
        crate::search_rows::pg_columns("")
    );
    let rows = match ts_micros {
        Some((min, max)) => {
            let (min, max) = (FoundEvent::ts_of_micros(min), FoundEvent::ts_of_micros(max));
            let sql = format!("{columns} AND ts >= $5 AND ts <= $6 ORDER BY \"offset\" LIMIT {READ_STEP}");
            client.query(&sql, &[&due.topic, &due.partition, &start, &due.offsets.end, &min, &max]).await?
        }
        None => {
            let sql = format!("{columns} ORDER BY \"offset\" LIMIT {READ_STEP}");
            client.query(&sql, &[&due.topic, &due.partition, &start, &due.offsets.end]).await?
        }
    };
    let mut last = None;
    let events = rows
        .iter()
        .map(|row| {
            let offset: i64 = row.get(8);
            last = Some(offset);
            let stored = EventRow {
                ts: row.get(0),
                level: row.get(1),
                service: row.get(2),
                message: row.get(3),
                user_id: row.get(4),
                attrs: row.get(5),
                topic: row.get(6),
                partition: row.get(7),
                offset,
            };
            let event = stored.found().map_err(|e| e.to_string())?;
            Ok((event, row.get::<_, Vec<String>>(9)))
        })
        .collect();
    debug_assert!(last.is_none_or(|l| l < due.offsets.end));
    Ok((events, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_read_back_what_they_say_and_refuse_anything_else() {
        let a = Announcement { topic: "logs".into(), partition: 3, from: 10, to: 20, ts_micros: Some((5, 9)) };
        assert_eq!(a.payload(), "logs 3 10 20 5 9");
        assert_eq!(Announcement::parse(&a.payload()), Some(a));
        let rejects_only = Announcement { topic: "t.x-1".into(), partition: 0, from: 0, to: 1, ts_micros: None };
        assert_eq!(Announcement::parse(&rejects_only.payload()), Some(rejects_only));
        for bad in ["", "logs", "logs 1 2 3", "logs 1 2 3 4", "logs x 2 3 - -", "logs 1 2 3 - - more", " 1 2 3 - -"] {
            assert_eq!(Announcement::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn heard_batches_of_a_partition_merge_into_one_range() {
        let heard = Heard::default();
        let at = |from, to, ts| Announcement { topic: "logs".into(), partition: 0, from, to, ts_micros: ts };
        heard.add(at(10, 20, Some((100, 200))));
        heard.add(at(20, 25, None));
        heard.add(at(25, 30, Some((50, 150))));
        heard.add(Announcement { partition: 1, ..at(0, 1, None) });
        let taken = heard.take();
        assert_eq!(taken, [at(10, 30, Some((50, 200))), Announcement { partition: 1, ..at(0, 1, None) }]);
        assert!(heard.take().is_empty());
    }
}
