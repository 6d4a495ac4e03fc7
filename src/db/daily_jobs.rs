//! The PostgreSQL DailyJobs: the scheduler lead is a session advisory lock held on a connection of its
//! own; summaries and partition maintenance run on fresh connections.

use actors::ports::{DailyJobs, StoreError};
use actors::schedule::{PartitionChanges, SummaryRun};
use async_trait::async_trait;
use chrono::{Days, NaiveDate};
use slog::Logger;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::summary;

/// Key of the session advisory lock that makes one scheduler the leader (per database).
pub const LEADER_LOCK_KEY: i64 = 0x6c61_5f73_6368_6564; // "la_sched"

/// Connects with tokio-postgres; the connection task ends with the client.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // Errors surface on the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Creates the partitions `first..=last` that are missing; returns the days created.
pub async fn ensure_partitions(client: &Client, first: NaiveDate, last: NaiveDate) -> anyhow::Result<Vec<NaiveDate>> {
    let mut created = Vec::new();
    for day in first.iter_days().take_while(|d| *d <= last) {
        let made: bool = client.query_one("SELECT ensure_logs_partition($1)", &[&day]).await?.get(0);
        if made {
            created.push(day);
        }
    }
    Ok(created)
}

/// Drops the daily partitions `logs_YYYYMMDD` of days before `oldest_kept`; returns the days dropped.
pub async fn drop_partitions_before(client: &Client, oldest_kept: NaiveDate) -> anyhow::Result<Vec<NaiveDate>> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = 'logs'::regclass",
            &[],
        )
        .await?;
    let mut dropped = Vec::new();
    for row in rows {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        let Some(day) = name.strip_prefix("logs_").and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok()) else {
            continue;
        };
        if day < oldest_kept {
            // Names come from the catalog; quote them anyway.
            let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            // One implicit transaction: kept window counts (db::ranking) that held the day's rows
            // see the epoch move with the drop.
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {}.{}; UPDATE logs_epoch SET n = n + 1",
                    quoted(&schema),
                    quoted(&name)
                ))
                .await?;
            dropped.push(day);
        }
    }
    dropped.sort();
    Ok(dropped)
}

/// Holds the lead's connection between calls.
struct Lead {
    client: Option<Client>,
    held: bool,
}

/// Daily jobs against one PostgreSQL database.
pub struct PgDailyJobs {
    url: String,
    lead: Mutex<Lead>,
    log: Logger,
}

impl PgDailyJobs {
    pub fn new(url: impl Into<String>, log: &Logger) -> PgDailyJobs {
        PgDailyJobs { url: url.into(), lead: Mutex::new(Lead { client: None, held: false }), log: log.clone() }
    }
}

#[async_trait]
impl DailyJobs for PgDailyJobs {
    async fn lead(&self) -> Result<bool, StoreError> {
        let mut lead = self.lead.lock().await;
        if let Some(client) = lead.client.as_ref() {
            // A lock held by a dead session is already released: check the session is alive.
            if client.is_closed() || client.simple_query("SELECT 1").await.is_err() {
                *lead = Lead { client: None, held: false };
            }
        }
        if lead.held {
            return Ok(true);
        }
        if lead.client.is_none() {
            lead.client = Some(connect(&self.url).await.map_err(unavailable)?);
        }
        let client = lead.client.as_ref().expect("connected above");
        let got: bool =
            client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY]).await.map_err(unavailable)?.get(0);
        lead.held = got;
        Ok(got)
    }

    async fn last_summarized(&self) -> Result<Option<NaiveDate>, StoreError> {
        let client = connect(&self.url).await.map_err(unavailable)?;
        summary::last_summarized(&client).await.map_err(|e| unavailable(format!("{e:#}")))
    }

    async fn summarize(&self, day: NaiveDate) -> Result<SummaryRun, StoreError> {
        let mut client = connect(&self.url).await.map_err(unavailable)?;
        summary::summarize_day(&mut client, day, &self.log).await.map_err(|e| unavailable(format!("{e:#}")))
    }

    async fn maintain_partitions(
        &self,
        today: NaiveDate,
        ahead_days: u32,
        retention_days: u32,
    ) -> Result<PartitionChanges, StoreError> {
        let client = connect(&self.url).await.map_err(unavailable)?;
        let failed = |e: anyhow::Error| unavailable(format!("{e:#}"));
        let created = ensure_partitions(&client, today - Days::new(1), today + Days::new(u64::from(ahead_days)))
            .await
            .map_err(failed)?;
        let dropped =
            drop_partitions_before(&client, today - Days::new(u64::from(retention_days))).await.map_err(failed)?;
        Ok(PartitionChanges { created, dropped })
    }
}
