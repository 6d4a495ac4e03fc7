//! Wires configuration and adapters into the roles the CLI runs.

use anyhow::Context;
use chrono::{Days, Utc};
use slog::{info, Logger};

use crate::config::Settings;
use crate::db;
use crate::kafka::admin::{ensure_topic, TopicState};
use crate::telemetry::LogLevelHandle;

/// Days of `logs` partitions made ahead of today by `migrate` and by maintenance.
pub const PARTITIONS_AHEAD_DAYS: u64 = 7;

/// What `migrate` did.
#[derive(Debug)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub partitions_created: usize,
    pub topic: TopicState,
}

/// Applies migrations, makes the `logs` partitions from yesterday to a week ahead, and creates the
/// Kafka topic if it is missing. Idempotent.
pub async fn migrate(settings: &Settings, log: &Logger) -> anyhow::Result<MigrationReport> {
    let url = settings.database_url.expose();
    let applied = db::migrate::run_migrations(url).await?;
    info!(log, "migrations applied"; "count" => applied.len(), "versions" => applied.join(","));

    let mut conn = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(url)
        .await
        .context("connecting to PostgreSQL")?;
    let today = Utc::now().date_naive();
    let first = today - Days::new(1);
    let last = today + Days::new(PARTITIONS_AHEAD_DAYS);
    let partitions_created = db::migrate::ensure_partitions(&mut conn, first, last).await?;
    info!(log, "logs partitions ready"; "from" => %first, "to" => %last, "created" => partitions_created);

    // Every topic of KAFKA_TOPIC; the report carries the first one's state.
    let mut first_state = None;
    for name in settings.kafka_topics() {
        let state = ensure_topic(&settings.kafka_brokers, &name, settings.kafka_partitions).await?;
        info!(log, "kafka topic ready"; "topic" => &name, "state" => ?state, "partitions" => settings.kafka_partitions);
        first_state.get_or_insert(state);
    }
    let topic = first_state.context("KAFKA_TOPIC names no topic")?;
    Ok(MigrationReport { applied, partitions_created, topic })
}

/// Resolves at the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ingest, windows and the HTTP API in one process.
    Run,
    /// The HTTP API only: answers from Redis, then PostgreSQL.
    Api,
}

/// The `ingest` role: the pipeline into PostgreSQL, each committed batch's bucket delta forwarded
/// to Redis (no windows of its own), and the admin listener; until SIGINT/SIGTERM.
pub async fn run_ingest(settings: &Settings, log_level: LogLevelHandle, log: &Logger) -> anyhow::Result<()> {
    use actix::Actor;
    use std::sync::Arc;

    let metrics = Arc::new(crate::admin::Metrics::new());
    let redis = crate::cache::RedisCache::from_settings(settings)?;
    redis.warm_up().await;
    let keywords = Arc::new(actors::windows::KeywordSet::new(settings.keywords()));
    let cache_probe = metrics.actors.probe("delta_writer", "0");
    let sink =
        crate::cache::delta_writer::DeltaWriter::start(redis, keywords.clone(), &metrics.deltas, cache_probe, log);
    let forwarder = actors::windows::forwarder::DeltaForwarder::new(
        keywords,
        settings.window_horizon.seconds() as i64,
        settings.window_skew_seconds,
        Arc::new(sink),
        Arc::new(actors::ports::SystemClock),
    );
    let forwarder = actors::mailbox::Inbox::new(forwarder.start(), metrics.actors.probe("delta_forwarder", "0"));
    let ingest = crate::ingest::Ingest::start(settings, Some(forwarder.recipient()), None, &metrics, log)?;
    let admin = crate::admin::AdminState { metrics, source: Some(ingest.state()), aggregator: None, log_level };
    let (admin, _) = start_admin(settings, admin, log)?;
    shutdown_signal().await;
    admin.stop(true).await;
    info!(log, "shutdown requested");
    ingest.stop().await;
    Ok(())
}

/// The `schedule` role: the SchedulerActor (daily summary, partition maintenance; one leader acts
/// among all schedulers) and the admin listener; until SIGINT/SIGTERM.
pub async fn run_schedule(settings: &Settings, log_level: LogLevelHandle, log: &Logger) -> anyhow::Result<()> {
    let metrics = std::sync::Arc::new(crate::admin::Metrics::new());
    let scheduler = crate::jobs::Scheduler::start(settings, &metrics, log);
    let admin = crate::admin::AdminState { metrics, source: None, aggregator: None, log_level };
    let (admin, _) = start_admin(settings, admin, log)?;
    shutdown_signal().await;
    info!(log, "shutdown requested");
    admin.stop(true).await;
    scheduler.stop();
    Ok(())
}

/// Starts the admin listener (`ADMIN_ADDR`) in the background; returns its handle and port.
pub fn start_admin(
    settings: &Settings,
    state: crate::admin::AdminState,
    log: &Logger,
) -> anyhow::Result<(actix_web::dev::ServerHandle, u16)> {
    let listener = std::net::TcpListener::bind(settings.admin_addr)
        .with_context(|| format!("binding ADMIN_ADDR {}", settings.admin_addr))?;
    let port = listener.local_addr()?.port();
    let server = crate::admin::serve(state, settings.admin_token.clone(), listener)?;
    let handle = server.handle();
    actix_rt::spawn(server);
    info!(log, "admin listening"; "addr" => %settings.admin_addr, "port" => port);
    Ok((handle, port))
}

/// A running process: its HTTP server and, for `run`, its ingest pipeline and windows.
pub struct Application {
    metrics: std::sync::Arc<crate::admin::Metrics>,
    port: u16,
    admin_port: u16,
    admin: actix_web::dev::ServerHandle,
    server: actix_web::dev::Server,
    grpc: Option<crate::grpc::GrpcServer>,
    ingest: Option<crate::ingest::Ingest>,
    scheduler: Option<crate::jobs::Scheduler>,
    arbiters: Vec<actix::Arbiter>,
    log: Logger,
}

impl Application {
    /// Builds every part of `role` and binds the public listener (`HTTP_ADDR`; port 0 picks one).
    /// Must run inside an actix System.
    pub async fn build(
        settings: &Settings,
        role: Role,
        log_level: LogLevelHandle,
        log: &Logger,
    ) -> anyhow::Result<Application> {
        use std::sync::Arc;
        use std::time::Duration;

        use actix::Actor;
        use actors::ports::SystemClock;
        use actors::windows::{KeywordSet, WindowAggregatorActor, WindowConfig};

        use crate::cache::delta_writer::DeltaWriter;
        use actors::windows::{CacheReadObserver, RedisSource, WindowReader};
        use futures::FutureExt;

        use crate::cache::answers::RedisBuckets;
        use crate::cache::RedisCache;
        use crate::db::stats::{PgBucketSource, PgStats};
        use crate::http::routes::{LagProbe, Probe, WindowHealth};
        use crate::http::AppState;

        let log = log.new(slog::o!("role" => format!("{role:?}").to_lowercase()));
        let keywords = Arc::new(KeywordSet::new(settings.keywords()));
        let horizon = settings.window_horizon.seconds() as i64;
        let redis = RedisCache::from_settings(settings)?;
        redis.warm_up().await;
        let db_timeout = Duration::from_millis(settings.database_timeout_ms);
        let pool = db::pool(settings.database_url.expose(), settings.database_pool_size, db_timeout);
        let pg = PgStats::new(pool.clone(), settings.kafka_topics(), keywords.clone(), db_timeout);

        let metrics = Arc::new(crate::admin::Metrics::new());
        let mut arbiters = Vec::new();
        let (aggregator, ingest, lag, kafka_ready): (_, _, Option<LagProbe>, Option<Probe>) = match role {
            Role::Run => {
                let cache_probe = metrics.actors.probe("delta_writer", "0");
                let deltas = DeltaWriter::start(redis.clone(), keywords.clone(), &metrics.deltas, cache_probe, &log);
                let config = WindowConfig {
                    topics: settings.kafka_topics(),
                    horizon,
                    skew: settings.window_skew_seconds,
                    keywords: keywords.clone(),
                };
                let source = Arc::new(
                    PgBucketSource::new(settings.database_url.expose())
                        .with_timeout(Duration::from_millis(settings.database_rebuild_timeout_ms)),
                );
                let agg_log = log.clone();
                let agg_probe = metrics.actors.probe("window_aggregator", "0");
                let probe = agg_probe.clone();
                // Its own thread: queries never wait behind parsing.
                let arbiter = actix::Arbiter::new();
                let aggregator = WindowAggregatorActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    let deltas = Some(Arc::new(deltas) as Arc<dyn actors::windows::DeltaSink>);
                    WindowAggregatorActor::new(config, source, deltas, Arc::new(SystemClock), probe, agg_log)
                });
                let aggregator = actors::mailbox::Inbox::new(aggregator, agg_probe);
                arbiters.push(arbiter);
                let ingest = crate::ingest::Ingest::start(
                    settings,
                    Some(aggregator.recipient()),
                    Some(aggregator.recipient()),
                    &metrics,
                    &log,
                )?;
                let state = ingest.state();
                let lag: LagProbe = Arc::new(move || state.lag());
                let state = ingest.state();
                let ready: Probe = Arc::new(move || !state.owned().is_empty());
                (Some(aggregator), Some(ingest), Some(lag), Some(ready))
            }
            Role::Api => (None, None, None, None),
        };
        let producer = crate::kafka::intake::IntakeProducer::new(settings)?;
        // `run` is the whole service in one process, the daily jobs included.
        let scheduler = (role == Role::Run).then(|| crate::jobs::Scheduler::start(settings, &metrics, &log));
        let admin_state = crate::admin::AdminState {
            metrics: metrics.clone(),
            source: ingest.as_ref().map(|i| i.state()),
            aggregator: aggregator.clone(),
            log_level,
        };
        let (admin, admin_port) = start_admin(settings, admin_state, &log)?;
        let cache_results = metrics.cache.clone();
        let count_cache_read: CacheReadObserver =
            Arc::new(move |read| cache_results.with_label_values(&[read.as_str()]).inc());
        let mut reader = WindowReader::new(Arc::new(pg.clone()), Arc::new(SystemClock))
            .with_redis(RedisSource {
                answers: Arc::new(redis.clone()),
                buckets: Arc::new(RedisBuckets::new(redis.clone(), keywords.clone())),
            })
            .observing_redis(count_cache_read);
        if let Some(aggregator) = &aggregator {
            reader = reader.with_memory(Arc::new(aggregator.clone()));
        }
        let (redis_up, redis_watermark) = (redis.clone(), redis.clone());
        let windows = WindowHealth {
            memory: aggregator,
            postgres_up: Arc::new(move || {
                let pg = pg.clone();
                async move { pg.ping().await }.boxed()
            }),
            redis_up: Some(Arc::new(move || {
                let redis = redis_up.clone();
                async move { redis.ping().await }.boxed()
            })),
            redis_watermark: Some(Arc::new(move || {
                let redis = redis_watermark.clone();
                async move { redis.watermark().await.ok().flatten() }.boxed()
            })),
        };
        let state = actix_web::web::Data::new(AppState {
            reader,
            windows,
            max_window: actors::domain::Window::from_seconds(u64::from(settings.retention_days) * 86_400)
                .expect("retention is at least a day"),
            intake: Arc::new(actors::intake::Intake::new(
                crate::kafka::intake::KafkaPgIntake {
                    producer,
                    store: db::idempotency::IntakeStore::new(db::idempotency::DirectClients::new(
                        settings.database_url.expose(),
                        db_timeout,
                    )),
                },
                settings.parse_rules(),
                Duration::from_millis(settings.ingest_timeout_ms),
            )),
            summary: Arc::new(db::summary::reader::PgSummaryReader::new(
                pool,
                Duration::from_millis(settings.database_timeout_ms),
            )),
            ingest_max_body_bytes: settings.ingest_max_body_bytes,
            database_timeout_ms: settings.database_timeout_ms,
            lag,
            kafka_ready,
            ingest: ingest.as_ref().map(|i| i.view()),
            auth: crate::http::auth::Auth::from_settings(settings)?,
            metrics: metrics.clone(),
            log: log.clone(),
        });
        let listener = std::net::TcpListener::bind(settings.http_addr)
            .with_context(|| format!("binding HTTP_ADDR {}", settings.http_addr))?;
        let port = listener.local_addr()?.port();
        let grpc = match settings.grpc_addr {
            Some(addr) => {
                let listener =
                    std::net::TcpListener::bind(addr).with_context(|| format!("binding GRPC_ADDR {addr}"))?;
                let grpc = crate::grpc::serve(state.clone(), listener, &log)?;
                info!(log, "listening (gRPC)"; "addr" => %addr, "port" => grpc.port());
                Some(grpc)
            }
            None => None,
        };
        let server = crate::http::serve(state, settings, listener)?;
        info!(log, "listening"; "addr" => %settings.http_addr, "port" => port);
        Ok(Application { metrics, port, admin_port, admin, server, grpc, ingest, scheduler, arbiters, log })
    }

    /// What the admin listener exports (a generator run in the process reports there too).
    pub fn metrics(&self) -> &crate::admin::Metrics {
        &self.metrics
    }

    /// The public listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The gRPC listener's port, when `GRPC_ADDR` is set.
    pub fn grpc_port(&self) -> Option<u16> {
        self.grpc.as_ref().map(crate::grpc::GrpcServer::port)
    }

    /// The admin listener's port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The daily jobs' counters (`run` only), for the metrics layer.
    pub fn summary_stats(&self) -> Option<std::sync::Arc<actors::schedule::SummaryStats>> {
        self.scheduler.as_ref().map(|s| s.stats.clone())
    }

    /// Serves until SIGINT/SIGTERM, then stops the server, then ingest (within 10 s together).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        if let Some(grpc) = self.grpc {
            grpc.stop().await;
        }
        self.admin.stop(true).await;
        info!(self.log, "http server stopped");
        if let Some(scheduler) = self.scheduler {
            scheduler.stop();
        }
        if let Some(ingest) = self.ingest {
            ingest.stop().await;
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        Ok(())
    }
}
