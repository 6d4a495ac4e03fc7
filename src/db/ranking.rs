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
//! an offset that went back, or a partition that once jumped back over offsets the counts may hold
//! sends the question to a full count again. Why: an hour of 100k services costs the backend ~0.65
//! CPU seconds to count, and a live window is a new question every second (docs/BENCHMARKS.md,
//! cardinality).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use actors::windows::{ErrorStats, Ranking, WindowRange};
use diesel::sql_types::{Array, BigInt, Integer, Text};
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

/// The kept counts of a process's windows, by length.
#[derive(Default)]
pub struct Rankings {
    slots: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Option<Kept>>>>>,
    counted: AtomicU64,
    updated: AtomicU64,
    invalidated: AtomicU64,
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
/// `PgStats::errors`).
const COUNT_SERVICES: &str = "SELECT service, count(*)::bigint AS total, \
     count(*) FILTER (WHERE level >= 4)::bigint AS errors \
     FROM logs WHERE topic = ANY($1) AND ts >= to_timestamp($2) AND ts < to_timestamp($3) GROUP BY service";

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
    pub fn counts(&self) -> RankingCounts {
        RankingCounts {
            counted: AtomicU64::load(&self.counted, Ordering::Relaxed),
            updated: AtomicU64::load(&self.updated, Ordering::Relaxed),
            invalidated: AtomicU64::load(&self.invalidated, Ordering::Relaxed),
        }
    }

    /// The slot of windows `seconds` long, or None when that many lengths are kept already.
    fn slot(&self, seconds: i64) -> Option<Arc<tokio::sync::Mutex<Option<Kept>>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if !slots.contains_key(&seconds) && slots.len() >= MAX_KEPT_WINDOWS {
            return None;
        }
        Some(slots.entry(seconds).or_default().clone())
    }

    /// The kept counts of windows `seconds` long, held until the guard drops (one question of a
    /// length at a time: the next one builds on what this one leaves). Taken before a pooled
    /// connection, so that questions waiting here hold none. None: this length is not kept.
    pub(crate) async fn lock(&self, seconds: i64) -> Option<OwnedMutexGuard<Option<Kept>>> {
        Some(self.slot(seconds)?.lock_owned().await)
    }

    /// The window's ranking from kept counts (`kept`, locked by the caller) when they can be brought
    /// to `range`, else counted in full (and kept). None: this question is better answered by the
    /// plain ranked query (one older than the kept counts, out of their reach).
    pub(crate) async fn answer(
        &self,
        conn: &mut AsyncPgConnection,
        kept: &mut Option<Kept>,
        topics: &[String],
        range: WindowRange,
        limit: usize,
        work_mem: &str,
    ) -> Result<Option<ErrorStats>, diesel::result::Error> {
        let seconds = range.to - range.from;
        // Taken out: a failure below leaves nothing half-applied behind.
        let previous = kept.take();
        let reach = seconds / 4;
        let previous = match previous {
            Some(k) if (k.range.to - range.to).abs() <= reach => Some(k),
            Some(k) if range.to < k.range.to => {
                // An older window (an `at=` question): the kept counts stay for the live one.
                *kept = Some(k);
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
                    return Ok(Some(stats));
                }
                Err(_) => {
                    self.invalidated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let (counted, keepable) = count(conn, topics, range, work_mem).await?;
        let stats = counted.ranking.answer(limit);
        if keepable {
            self.counted.fetch_add(1, Ordering::Relaxed);
            *kept = Some(counted);
        }
        Ok(Some(stats))
    }
}

/// Why kept counts cannot be brought forward.
#[derive(Debug)]
enum Stale {
    Epoch,
    OffsetBack,
    Inconsistent,
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

/// Counts the whole window in one snapshot with its fence; keepable unless a partition once jumped
/// back over offsets above its fence (a recreated topic: rows of its earlier life may carry offsets
/// that later batches reuse, so "stored since" could not be told by offset).
async fn count(
    conn: &mut AsyncPgConnection,
    topics: &[String],
    range: WindowRange,
    work_mem: &str,
) -> Result<(Kept, bool), diesel::result::Error> {
    let topics = topics.to_vec();
    let work_mem = work_mem.to_owned();
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(async move |conn| {
            diesel::sql_query(
                "SELECT set_config('work_mem', $1, true), set_config('max_parallel_workers_per_gather', '0', true)",
            )
            .bind::<Text, _>(&work_mem)
            .execute(conn)
            .await?;
            let (epoch, fence) = fence(conn, &topics).await?;
            let jumped_back: Vec<PositionRow> = diesel::sql_query(
                "SELECT topic, \"partition\", max(from_offset) AS \"offset\" FROM offset_gaps \
                     WHERE topic = ANY($1) AND to_offset < from_offset GROUP BY 1, 2",
            )
            .bind::<Array<Text>, _>(&topics)
            .load(conn)
            .await?;
            let rows: Vec<ServiceRow> = diesel::sql_query(COUNT_SERVICES)
                .bind::<Array<Text>, _>(&topics)
                .bind::<BigInt, _>(range.from)
                .bind::<BigInt, _>(range.to)
                .load(conn)
                .await?;
            let ambiguous =
                jumped_back.iter().any(|j| j.offset > fence.get(&(j.topic.clone(), j.partition)).copied().unwrap_or(0));
            let keepable = !ambiguous && rows.len() <= MAX_KEPT_SERVICES;
            let ranking = Ranking::counted(rows.into_iter().map(|r| (r.service, r.total as u64, r.errors as u64)));
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
