//! The incremental `by_service` ranking of long windows: PostgreSQL counts a window's services once,
//! then each later question of the same length is answered from those counts and the rows that
//! changed, read in one REPEATABLE READ snapshot:
//!
//! - the rows of the seconds that left the window, less those stored since the counts were made;
//! - every row of the seconds that entered it;
//! - the rows stored since in the seconds both windows share (late events), found by offset.
//!
//! "Stored since" is exact because every row the ingest writers add lies between its partition's
//! `kafka_offsets.next_offset` before and after the batch, committed together; the counts keep the
//! offsets of their snapshot. Any other write to `logs`, any offset jump and retention's drop of a
//! day bump `logs_epoch` (migration `2026-12-03-000001_logs_epoch`, `daily_jobs`). A changed epoch,
//! an offset that went back, or a row of the window at or above its partition's fence (the earlier
//! life of a recreated topic, a partition moved back) sends the question to a full count again, and
//! counts holding such rows are not kept. Why: an hour of 100k services costs the backend ~0.65
//! CPU seconds to count, and a live window is a new question every second (docs/BENCHMARKS.md,
//! cardinality).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use actors::windows::{ErrorStats, Ranking, WindowRange};

use super::rejects::NO_KAFKA_PARTITION;
use super::stats::ERRORS_WORK_MEM;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Windows shorter than this are counted in full each time: their rows are few.
pub const MIN_WINDOW_SECS: i64 = 300;
/// Distinct window lengths whose counts are kept (each is as big as its services).
const MAX_KEPT_WINDOWS: usize = 4;
/// A window with more services than this is not kept: it is counted in full each time. A kept service
/// costs ~109 bytes (`cargo test -p actors bytes_per_kept_service -- --ignored --nocapture`), so the
/// kept counts stay under ~27 MiB a window length and ~110 MiB in all.
pub const MAX_KEPT_SERVICES: usize = 250_000;

type Fence = HashMap<(String, i32), i64>;

/// One window length's counts, with what they were counted from.
pub(crate) struct Kept {
    range: WindowRange,
    ranking: Ranking,
    /// `kafka_offsets` of the topics, in the snapshot the counts were made in.
    fence: Fence,
    epoch: i64,
}

/// How many questions each way answered (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RankingCounts {
    /// Whole-window counts that were kept.
    pub counted: u64,
    /// Answers from kept counts and the rows that changed.
    pub updated: u64,
    /// Kept counts given up (an unfenced write, an offset moved back, counts that did not add up).
    pub invalidated: u64,
}

/// The kept counts of a process's windows, by length (each with when it was last asked).
pub struct Rankings {
    slots: Mutex<HashMap<i64, (Arc<Slot>, Instant)>>,
    /// How long a length whose counts could not be kept is answered by the plain query.
    pause: Duration,
    counted: AtomicU64,
    updated: AtomicU64,
    invalidated: AtomicU64,
}

/// One window length: its kept counts, and what is known of them without waiting for them.
pub(crate) struct Slot {
    kept: Arc<tokio::sync::Mutex<Option<Kept>>>,
    /// `range.to` of the kept counts, `i64::MIN` while there are none.
    kept_to: AtomicI64,
    /// Until then this length is answered by the plain ranked query: its counts could not be kept
    /// (too many services, offsets that cannot tell what was stored since) or took too long.
    plain_until: Mutex<Option<Instant>>,
}

/// How long a length whose counts could not be kept goes to the plain query before trying again.
pub const PLAIN_PAUSE: Duration = Duration::from_secs(60);

impl Slot {
    fn new() -> Slot {
        Slot { kept: Arc::default(), kept_to: AtomicI64::new(i64::MIN), plain_until: Mutex::new(None) }
    }

    /// Whether `range` is worth waiting for the kept counts: not paused, and not an older window
    /// out of their reach (an `at=` question leaves them to the live one).
    pub(crate) fn worth_waiting(&self, range: WindowRange) -> bool {
        let paused = self.plain_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| Instant::now() < t);
        let kept_to = AtomicI64::load(&self.kept_to, Ordering::Relaxed);
        let older_out_of_reach = kept_to != i64::MIN && range.to < kept_to - reach(range);
        !paused && !older_out_of_reach
    }

    /// Sends this length to the plain query for `pause`.
    pub(crate) fn pause(&self, pause: Duration) {
        *self.plain_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + pause);
    }

    /// The kept counts, held until the guard drops: one question of a length at a time, the next one
    /// builds on what this one leaves. Taken before a pooled connection, so that questions waiting
    /// here hold none.
    pub(crate) async fn lock(&self) -> OwnedMutexGuard<Option<Kept>> {
        self.kept.clone().lock_owned().await
    }

    fn note(&self, kept: &Option<Kept>) {
        self.kept_to.store(kept.as_ref().map_or(i64::MIN, |k| k.range.to), Ordering::Relaxed);
    }
}

/// How far kept counts are brought: a quarter of the window (then the edges are small next to it).
fn reach(range: WindowRange) -> i64 {
    (range.to - range.from) / 4
}

#[derive(QueryableByName)]
struct ServiceRow {
    #[diesel(sql_type = Text)]
    service: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
}

#[derive(QueryableByName)]
struct PositionRow {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
}

#[derive(QueryableByName)]
struct EpochRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The window's whole count per service (no parallel workers, enough `work_mem`: see
/// `PgStats::errors`), and in the same scan each partition's highest offset in the window (rows
/// with `by_partition` = 1, `service` NULL).
const COUNT_SERVICES: &str = "SELECT service, topic, \"partition\", count(*)::bigint AS total, \
     count(*) FILTER (WHERE level >= 4)::bigint AS errors, max(\"offset\") AS top, \
     GROUPING(service) AS by_partition \
     FROM logs WHERE topic = ANY($1) AND ts >= to_timestamp($2) AND ts < to_timestamp($3) \
     GROUP BY GROUPING SETS ((service), (topic, \"partition\"))";

/// Each partition's highest offset among the rows of seconds that entered the window.
const ENTERED_TOPS: &str = "SELECT topic, \"partition\", max(\"offset\") AS \"offset\" FROM logs \
     WHERE topic || '' = ANY($1) AND ts >= to_timestamp($2) AND ts < to_timestamp($3) GROUP BY 1, 2";

#[derive(QueryableByName)]
struct CountedRow {
    #[diesel(sql_type = Nullable<Text>)]
    service: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    topic: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    partition: Option<i32>,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    top: i64,
    #[diesel(sql_type = Integer)]
    by_partition: i32,
}

/// Whether every row of `tops` (a partition and its highest offset among some rows) lies below the
/// partition's fence, as the rows the ingest writers store do. A row at or above it (the earlier
/// life of a recreated topic, a partition an operator moved back, a partition with no offsets row)
/// could not be told from rows stored later by offset: counts holding it are not kept.
fn below_fence(fence: &Fence, mut tops: impl Iterator<Item = (String, i32, i64)>) -> bool {
    tops.all(|(topic, partition, top)| {
        partition == NO_KAFKA_PARTITION || fence.get(&(topic, partition)).is_some_and(|&next| top < next)
    })
}

/// The signed change per service between two windows: `f` lists each partition's offsets stored
/// since the counts ([lo, hi)); $6–$7 is the second(s) that left, $8–$9 those that entered, $10–$11
/// the seconds both share.
///
/// `l.topic || ''` keeps the position index (topic, partition, offset) out of the edges' plans: on a
/// partition not analyzed yet (a new day, a fresh bulk load) the planner's default estimates tie the
/// topic and the one-second range, it picked the topic, and each edge read every row of the day
/// (0.56 s for 600k rows, `EXPLAIN ANALYZE`) instead of one second's by the `ts` index.
const CHANGED_SERVICES: &str = "WITH f AS MATERIALIZED ( \
         SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[]) AS f(topic, part, lo, hi)), \
     d AS ( \
         SELECT l.service, l.level, -1 AS sign FROM logs l \
             WHERE l.topic || '' = ANY($1) AND l.ts >= to_timestamp($6) AND l.ts < to_timestamp($7) \
             AND NOT EXISTS (SELECT 1 FROM f WHERE f.topic = l.topic AND f.part = l.\"partition\" \
                 AND l.\"offset\" >= f.lo AND l.\"offset\" < f.hi) \
         UNION ALL \
         SELECT l.service, l.level, 1 FROM logs l \
             WHERE l.topic || '' = ANY($1) AND l.ts >= to_timestamp($8) AND l.ts < to_timestamp($9) \
         UNION ALL \
         SELECT n.service, n.level, 1 FROM f CROSS JOIN LATERAL ( \
             SELECT l.service, l.level FROM logs l WHERE l.topic = f.topic AND l.\"partition\" = f.part \
                 AND l.\"offset\" >= f.lo AND l.\"offset\" < f.hi \
                 AND l.ts >= to_timestamp($10) AND l.ts < to_timestamp($11)) n) \
     SELECT service, sum(sign)::bigint AS total, \
         coalesce(sum(sign) FILTER (WHERE level >= 4), 0)::bigint AS errors \
     FROM d GROUP BY service";

impl Rankings {
    /// No counts kept yet; a length whose counts cannot be kept goes to the plain query for `pause`.
    pub fn new(pause: Duration) -> Rankings {
        Rankings {
            slots: Mutex::default(),
            pause,
            counted: AtomicU64::default(),
            updated: AtomicU64::default(),
            invalidated: AtomicU64::default(),
        }
    }

    /// Sends the length of `slot` to the plain query for a while (its counts failed or took too long).
    pub(crate) fn pause(&self, slot: &Slot) {
        slot.pause(self.pause);
    }

    pub fn counts(&self) -> RankingCounts {
        RankingCounts {
            counted: AtomicU64::load(&self.counted, Ordering::Relaxed),
            updated: AtomicU64::load(&self.updated, Ordering::Relaxed),
            invalidated: AtomicU64::load(&self.invalidated, Ordering::Relaxed),
        }
    }

    /// The slot of windows `seconds` long. When `MAX_KEPT_WINDOWS` lengths are kept already, the
    /// one asked least recently that no question holds gives its place; None if all are held.
    pub(crate) fn slot(&self, seconds: i64) -> Option<Arc<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((slot, used)) = slots.get_mut(&seconds) {
            *used = now;
            return Some(slot.clone());
        }
        if slots.len() >= MAX_KEPT_WINDOWS {
            let idle = slots
                .iter()
                .filter(|(_, (slot, _))| slot.kept.try_lock().is_ok())
                .min_by_key(|(_, (_, used))| *used)
                .map(|(&length, _)| length)?;
            slots.remove(&idle);
        }
        let slot = Arc::new(Slot::new());
        slots.insert(seconds, (slot.clone(), now));
        Some(slot)
    }

    /// The window's ranking from kept counts (`kept`, of `slot`, locked by the caller) when they can
    /// be brought to `range`, else counted in full (and kept when they can be). None: this question
    /// is better answered by the plain ranked query (one older than the kept counts, out of reach).
    pub(crate) async fn answer(
        &self,
        slot: &Slot,
        conn: &mut AsyncPgConnection,
        kept: &mut Option<Kept>,
        topics: &[String],
        range: WindowRange,
        limit: usize,
    ) -> Result<Option<ErrorStats>, diesel::result::Error> {
        // Taken out: a failure below leaves nothing half-applied behind.
        let previous = kept.take();
        slot.note(kept);
        let previous = match previous {
            Some(k) if (k.range.to - range.to).abs() <= reach(range) => Some(k),
            Some(k) if range.to < k.range.to => {
                *kept = Some(k);
                slot.note(kept);
                return Ok(None);
            }
            _ => None,
        };
        if let Some(previous) = previous {
            match update(conn, topics, previous, range).await? {
                Ok(next) => {
                    self.updated.fetch_add(1, Ordering::Relaxed);
                    let stats = next.ranking.answer(limit);
                    *kept = Some(next);
                    slot.note(kept);
                    return Ok(Some(stats));
                }
                Err(_) => {
                    self.invalidated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let (counted, keepable) = count(conn, topics, range).await?;
        let stats = counted.ranking.answer(limit);
        if keepable {
            self.counted.fetch_add(1, Ordering::Relaxed);
            *kept = Some(counted);
            slot.note(kept);
        } else {
            slot.pause(self.pause);
        }
        Ok(Some(stats))
    }
}

/// Why kept counts cannot be brought forward.
#[derive(Debug)]
enum Stale {
    Epoch,
    OffsetBack,
    /// A row entering the window lies at or above its partition's fence.
    AboveFence,
    Inconsistent,
}

/// The first statement of a counting transaction, before its snapshot is taken: a day's partition
/// cannot be dropped (retention takes `logs` exclusively) between the snapshot that reads the epoch
/// and the queries that read the rows. Dropped before: the snapshot sees the epoch it moved.
async fn hold_partitions(conn: &mut AsyncPgConnection) -> Result<(), diesel::result::Error> {
    diesel::sql_query("LOCK TABLE logs IN ACCESS SHARE MODE").execute(conn).await.map(|_| ())
}

async fn fence(conn: &mut AsyncPgConnection, topics: &[String]) -> Result<(i64, Fence), diesel::result::Error> {
    let epoch: EpochRow = diesel::sql_query("SELECT n FROM logs_epoch").get_result(conn).await?;
    let offsets: Vec<PositionRow> = diesel::sql_query(
        "SELECT topic, \"partition\", next_offset AS \"offset\" FROM kafka_offsets WHERE topic = ANY($1)",
    )
    .bind::<Array<Text>, _>(topics)
    .load(conn)
    .await?;
    Ok((epoch.n, offsets.into_iter().map(|o| ((o.topic, o.partition), o.offset)).collect()))
}

/// Counts the whole window in one snapshot with its fence; keepable when every row of the window
/// lies below its partition's fence ([`below_fence`]) and the services are not too many.
async fn count(
    conn: &mut AsyncPgConnection,
    topics: &[String],
    range: WindowRange,
) -> Result<(Kept, bool), diesel::result::Error> {
    let topics = topics.to_vec();
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(async move |conn| {
            hold_partitions(conn).await?;
            diesel::sql_query(
                "SELECT set_config('work_mem', $1, true), set_config('max_parallel_workers_per_gather', '0', true)",
            )
            .bind::<Text, _>(ERRORS_WORK_MEM)
            .execute(conn)
            .await?;
            let (epoch, fence) = fence(conn, &topics).await?;
            let rows: Vec<CountedRow> = diesel::sql_query(COUNT_SERVICES)
                .bind::<Array<Text>, _>(&topics)
                .bind::<BigInt, _>(range.from)
                .bind::<BigInt, _>(range.to)
                .load(conn)
                .await?;
            let (partitions, services): (Vec<CountedRow>, Vec<CountedRow>) =
                rows.into_iter().partition(|r| r.by_partition == 1);
            let tops = partitions.into_iter().map(|r| (r.topic.unwrap_or_default(), r.partition.unwrap_or(0), r.top));
            let keepable = below_fence(&fence, tops) && services.len() <= MAX_KEPT_SERVICES;
            let ranking = Ranking::counted(
                services.into_iter().map(|r| (r.service.unwrap_or_default(), r.total as u64, r.errors as u64)),
            );
            Ok((Kept { range, ranking, fence, epoch }, keepable))
        })
        .await
}

/// `a` less `b`, for two windows of the same length: one range, maybe empty.
fn minus(a: WindowRange, b: WindowRange) -> WindowRange {
    if a.to <= b.from || b.to <= a.from {
        a
    } else if a.from < b.from {
        WindowRange { from: a.from, to: b.from }
    } else {
        WindowRange { from: b.to.max(a.from), to: a.to.max(b.to) }
    }
}

/// Brings kept counts to `range` in one snapshot, or says why they cannot be.
async fn update(
    conn: &mut AsyncPgConnection,
    topics: &[String],
    mut kept: Kept,
    range: WindowRange,
) -> Result<Result<Kept, Stale>, diesel::result::Error> {
    let topics = topics.to_vec();
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(async move |conn| {
            hold_partitions(conn).await?;
            let (epoch, now) = fence(conn, &topics).await?;
            if epoch != kept.epoch {
                return Ok(Err(Stale::Epoch));
            }
            if kept.fence.iter().any(|(p, was)| now.get(p).is_none_or(|is| is < was)) {
                return Ok(Err(Stale::OffsetBack));
            }
            let (mut t, mut p, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((topic, partition), &next) in &now {
                let was = kept.fence.get(&(topic.clone(), *partition)).copied().unwrap_or(0);
                if next > was {
                    t.push(topic.clone());
                    p.push(*partition);
                    lo.push(was);
                    hi.push(next);
                }
            }
            let left = minus(kept.range, range);
            let entered = minus(range, kept.range);
            let tops: Vec<PositionRow> = diesel::sql_query(ENTERED_TOPS)
                .bind::<Array<Text>, _>(&topics)
                .bind::<BigInt, _>(entered.from)
                .bind::<BigInt, _>(entered.to)
                .load(conn)
                .await?;
            if !below_fence(&now, tops.into_iter().map(|r| (r.topic, r.partition, r.offset))) {
                return Ok(Err(Stale::AboveFence));
            }
            let shared =
                WindowRange { from: kept.range.from.max(range.from), to: kept.range.to.min(range.to).max(range.from) };
            let rows: Vec<ServiceRow> = diesel::sql_query(CHANGED_SERVICES)
                .bind::<Array<Text>, _>(&topics)
                .bind::<Array<Text>, _>(&t)
                .bind::<Array<Integer>, _>(&p)
                .bind::<Array<BigInt>, _>(&lo)
                .bind::<Array<BigInt>, _>(&hi)
                .bind::<BigInt, _>(left.from)
                .bind::<BigInt, _>(left.to)
                .bind::<BigInt, _>(entered.from)
                .bind::<BigInt, _>(entered.to)
                .bind::<BigInt, _>(shared.from)
                .bind::<BigInt, _>(shared.to)
                .load(conn)
                .await?;
            for row in rows {
                if kept.ranking.apply(&row.service, row.total, row.errors).is_err() {
                    return Ok(Err(Stale::Inconsistent));
                }
            }
            kept.range = range;
            kept.fence = now;
            Ok(Ok(kept))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(from: i64, to: i64) -> WindowRange {
        WindowRange { from, to }
    }

    #[test]
    fn the_difference_of_two_windows_of_one_length() {
        assert_eq!(minus(r(10, 20), r(12, 22)), r(10, 12), "moved forward: what left");
        assert_eq!(minus(r(12, 22), r(10, 20)), r(20, 22), "moved forward: what entered");
        assert_eq!(minus(r(10, 20), r(8, 18)), r(18, 20), "moved back: what left");
        assert_eq!(minus(r(8, 18), r(10, 20)), r(8, 10), "moved back: what entered");
        let same = minus(r(10, 20), r(10, 20));
        assert_eq!(same.from, same.to, "the same window: nothing");
        assert_eq!(minus(r(10, 20), r(30, 40)), r(10, 20), "apart: all of it");
    }
}
