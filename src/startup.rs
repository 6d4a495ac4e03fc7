//! Wires configuration and adapters into the roles the CLI runs.

use anyhow::Context;
use chrono::{Days, Utc};
use slog::{info, Logger};

use crate::config::{Backend, Settings};
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

/// `log-analyzer migrate` on the backend the settings select; returns what to tell the user.
pub async fn migrate_any(settings: &Settings, log: &Logger) -> anyhow::Result<String> {
    match settings.backend()? {
        Backend::Stack => {
            let report = migrate(settings, log).await?;
            Ok(format!(
                "PostgreSQL: {} migrations applied, {} logs partitions created; Kafka topic {}: {:?}",
                report.applied.len(),
                report.partitions_created,
                settings.primary_topic(),
                report.topic
            ))
        }
        Backend::Embedded => {
            let db = settings.sqlite_db()?;
            let applied = crate::sqlite::migrate::run_migrations(&db)
                .await
                .with_context(|| format!("migrating the embedded store {}", db.path().display()))?;
            let file = std::path::absolute(db.path()).unwrap_or_else(|_| db.path().to_owned());
            info!(log, "migrations applied"; "count" => applied.len(), "versions" => applied.join(","),
                  "file" => %file.display());
            Ok(format!(
                "SQLite {}: {} migrations applied (the embedded mode has no topic; `run` migrates by itself too)",
                file.display(),
                applied.len()
            ))
        }
    }
}

/// Applies the PostgreSQL migrations, makes the `logs` partitions from yesterday to a week ahead,
/// and creates the Kafka topic if it is missing. Idempotent. The full stack only.
pub async fn migrate(settings: &Settings, log: &Logger) -> anyhow::Result<MigrationReport> {
    let url = settings.database_url.expose();
    // diesel's connection error drops the server's reason; this one keeps it for the hint.
    drop(connect_postgres(url).await?);
    let applied = db::migrate::run_migrations(url).await.map_err(|e| postgres_hint(url, e))?;
    info!(log, "migrations applied"; "count" => applied.len(), "versions" => applied.join(","));

    let mut conn = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(url)
        .await
        .map_err(|e| postgres_hint(url, anyhow::Error::new(e).context("connecting to PostgreSQL")))?;
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

/// A PostgreSQL client for one command; a failure says where and what to do.
pub async fn connect_postgres(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    db::daily_jobs::connect(url)
        .await
        .map_err(|e| postgres_hint(url, anyhow::Error::new(e).context("connecting to PostgreSQL")))
}

/// `host:port/database` of a PostgreSQL URL, without its user or password.
pub fn postgres_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('?').next().unwrap_or_default().to_owned()
}

/// Adds what to do to the two failures a newcomer meets first: no server, no database.
pub fn postgres_hint(url: &str, e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    let address = postgres_address(url);
    let (host, database) = address.split_once('/').unwrap_or((&address, ""));
    if text.contains("does not exist") && !database.is_empty() {
        e.context(format!(
            "PostgreSQL at {host} has no database {database:?}: create it (`createdb -h {} {database}`), \
             or start the local stack with `scripts/stack.sh up`, which makes it",
            host.split(':').next().unwrap_or(host)
        ))
    } else if text.contains("refused") || text.contains("could not connect") || text.contains("timed out") {
        e.context(format!(
            "PostgreSQL at {host} does not answer: is it running? `scripts/stack.sh up` starts the local stack \
             (or leave KAFKA_BROKERS and DATABASE_URL unset for the embedded mode)"
        ))
    } else {
        e.context(format!("PostgreSQL at {host}"))
    }
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

    if settings.backend()? == Backend::Embedded {
        return Err(embedded_role_error("ingest"));
    }
    let metrics = Arc::new(crate::admin::Metrics::with_mailbox_timing(settings.mailbox_metrics));
    // Without Redis there is no one to forward bucket deltas to: `api` answers from PostgreSQL.
    let forwarder = match optional_redis(settings).await? {
        Some(redis) => {
            let keywords = Arc::new(actors::windows::KeywordSet::new(settings.keywords()));
            let cache_probe = metrics.actors.probe("delta_writer", "0");
            let sink = crate::cache::delta_writer::DeltaWriter::start(
                redis,
                keywords.clone(),
                &metrics.deltas,
                cache_probe,
                log,
            );
            let forwarder = actors::windows::forwarder::DeltaForwarder::new(
                keywords,
                settings.window_horizon.seconds() as i64,
                settings.window_skew_seconds,
                Arc::new(sink),
                Arc::new(actors::ports::SystemClock),
            );
            Some(actors::mailbox::Inbox::new(forwarder.start(), metrics.actors.probe("delta_forwarder", "0")))
        }
        None => None,
    };
    let ingest = crate::ingest::Ingest::start(settings, forwarder.map(|f| f.recipient()), None, &metrics, log)?;
    let admin = crate::admin::AdminState {
        metrics,
        source: Some(ingest.state()),
        aggregator: None,
        log_level,
        dashboard: None,
    };
    let (admin, _) = start_admin(settings, admin, log)?;
    let source = ingest.state();
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        reason = source.failed() => Some(reason),
    };
    admin.stop(true).await;
    info!(log, "shutdown requested");
    ingest.stop().await;
    // A source that stopped on its own (fenced) ends the process with an error, so that neither a
    // supervisor nor a user mistakes it for a clean stop.
    failure.map_or(Ok(()), |reason| Err(anyhow::anyhow!(reason)))
}

/// The `schedule` role: the SchedulerActor (daily summary, partition maintenance; one leader acts
/// among all schedulers) and the admin listener; until SIGINT/SIGTERM.
pub async fn run_schedule(settings: &Settings, log_level: LogLevelHandle, log: &Logger) -> anyhow::Result<()> {
    if settings.backend()? == Backend::Embedded {
        return Err(embedded_role_error("schedule"));
    }
    let metrics = std::sync::Arc::new(crate::admin::Metrics::with_mailbox_timing(settings.mailbox_metrics));
    let jobs = std::sync::Arc::new(crate::db::daily_jobs::PgDailyJobs::new(settings.database_url.expose(), log));
    let scheduler = crate::jobs::Scheduler::start(settings, jobs, &metrics, log);
    let admin = crate::admin::AdminState { metrics, source: None, aggregator: None, log_level, dashboard: None };
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
    let listener = match std::net::TcpListener::bind(settings.admin_addr) {
        Ok(listener) => listener,
        // Roles started side by side on one machine (`ingest` and `api`) would all want the
        // default port: an unset ADMIN_ADDR gives way to a free one, a set one is an error.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !settings.admin_addr_given => {
            let free = std::net::SocketAddr::new(settings.admin_addr.ip(), 0);
            let listener = std::net::TcpListener::bind(free).with_context(|| format!("binding ADMIN_ADDR {free}"))?;
            slog::warn!(log, "the default ADMIN_ADDR is taken (another log-analyzer process?): admin on a free port";
                        "default" => %settings.admin_addr, "port" => listener.local_addr()?.port());
            listener
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("binding ADMIN_ADDR {} (set ADMIN_ADDR=127.0.0.1:0 for a free port)", settings.admin_addr)
            })
        }
    };
    let addr = listener.local_addr()?;
    let port = addr.port();
    let server = crate::admin::serve(state, settings.admin_token.clone(), listener)?;
    let handle = server.handle();
    actix_rt::spawn(server);
    info!(log, "admin listening"; "addr" => %addr, "port" => port);
    Ok((handle, port))
}

/// The ingest pipeline of a `run` process.
enum Pipeline {
    Kafka(crate::ingest::Ingest),
    Embedded(crate::embedded::EmbeddedIngest),
}

/// What differs between the backends in the public listeners' state.
struct Parts {
    reader: actors::windows::WindowReader,
    windows: crate::http::routes::WindowHealth,
    intake: std::sync::Arc<dyn actors::intake::TakeLines>,
    summary: std::sync::Arc<dyn actors::summary::SummaryReader>,
    search: std::sync::Arc<dyn actors::search::LogSearch>,
    lag: Option<crate::http::routes::LagProbe>,
    kafka_ready: Option<crate::http::routes::Probe>,
    ingest: Option<std::sync::Arc<dyn crate::http::readiness::IngestView>>,
    /// Shared with the admin listener's operator page; started here, on the public state.
    dashboard: std::sync::Arc<crate::http::dashboard::DashboardFeed>,
    tail: Option<crate::http::tail::Tail>,
}

/// Binds `HTTP_ADDR` (and `GRPC_ADDR` when set) and starts serving `parts`.
fn serve_public(
    settings: &Settings,
    parts: Parts,
    metrics: &std::sync::Arc<crate::admin::Metrics>,
    log: &Logger,
) -> anyhow::Result<(actix_web::dev::Server, u16, Option<crate::grpc::GrpcServer>)> {
    let state = actix_web::web::Data::new(crate::http::AppState {
        reader: parts.reader,
        windows: parts.windows,
        max_window: actors::domain::Window::from_seconds(u64::from(settings.retention_days) * 86_400)
            .expect("retention is at least a day"),
        intake: parts.intake,
        summary: parts.summary,
        search: parts.search,
        ingest_max_body_bytes: settings.ingest_max_body_bytes,
        database_timeout_ms: settings.database_timeout_ms,
        lag: parts.lag,
        kafka_ready: parts.kafka_ready,
        ingest: parts.ingest,
        auth: crate::http::auth::Auth::from_settings(settings)?,
        tail: parts.tail,
        metrics: metrics.clone(),
        dashboard: parts.dashboard,
        log: log.clone(),
    });
    let freshness_of = state.clone();
    state.dashboard.start(crate::http::dashboard::FeedSources {
        reader: state.reader.clone(),
        freshness: std::sync::Arc::new(move || {
            let state = freshness_of.clone();
            Box::pin(async move { crate::http::routes::freshness(&state).await })
        }),
    });
    let listener = std::net::TcpListener::bind(settings.http_addr)
        .with_context(|| format!("binding HTTP_ADDR {}", settings.http_addr))?;
    let port = listener.local_addr()?.port();
    let grpc = match settings.grpc_addr {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding GRPC_ADDR {addr}"))?;
            let rate = crate::http::limits::RateLimit::new(settings.rate_limit_rps, settings.rate_limit_burst);
            let grpc = crate::grpc::serve(state.clone(), rate, listener, log)?;
            info!(log, "listening (gRPC)"; "addr" => %addr, "port" => grpc.port());
            Some(grpc)
        }
        None => None,
    };
    let server = crate::http::serve(state, settings, listener)?;
    info!(log, "listening"; "addr" => %settings.http_addr, "port" => port);
    Ok((server, port, grpc))
}

/// Redis when `REDIS_URL` is set (the stack may run without it: answers come from memory, then
/// PostgreSQL).
async fn optional_redis(settings: &Settings) -> anyhow::Result<Option<crate::cache::RedisCache>> {
    if settings.redis_url.expose().trim().is_empty() {
        return Ok(None);
    }
    let redis = crate::cache::RedisCache::from_settings(settings)?;
    redis.warm_up().await;
    Ok(Some(redis))
}

/// The log search of the store `DATABASE_URL` names (`log-analyzer search`; `run` and `api` build
/// theirs with the rest of their parts).
pub fn search_port(settings: &Settings) -> anyhow::Result<std::sync::Arc<dyn actors::search::LogSearch>> {
    let url = settings.database_url.expose().trim();
    if crate::sqlite::is_sqlite_url(url) {
        let db = settings.sqlite_db()?;
        return Ok(embedded_search(settings, &db));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let timeout = std::time::Duration::from_millis(settings.database_timeout_ms);
        let pool = db::pool(url, 1, timeout);
        return Ok(std::sync::Arc::new(db::search::PgLogSearch::new(pool, timeout, settings.search_max_scan)));
    }
    anyhow::bail!("DATABASE_URL is neither sqlite: nor postgres://: nothing to search")
}

/// The search port of the embedded mode (SQLite), bounded like its stats reads.
fn embedded_search(settings: &Settings, db: &crate::sqlite::SqliteDb) -> std::sync::Arc<dyn actors::search::LogSearch> {
    let timeout = std::time::Duration::from_millis(settings.database_timeout_ms);
    crate::sqlite::search::embedded_search(db, settings.search_max_scan as usize, timeout)
}

/// The answer to `ingest`, `api` or `schedule` in the embedded mode.
pub fn embedded_role_error(role: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`{role}` is a role of the full stack: the embedded mode runs as one process, `log-analyzer run`; for separate roles set KAFKA_BROKERS and a postgres:// DATABASE_URL (`scripts/stack.sh env` prints them)"
    )
}

/// A running process: its HTTP server and, for `run`, its ingest pipeline and windows.
pub struct Application {
    metrics: std::sync::Arc<crate::admin::Metrics>,
    port: u16,
    admin_port: u16,
    admin: actix_web::dev::ServerHandle,
    server: actix_web::dev::Server,
    grpc: Option<crate::grpc::GrpcServer>,
    pipeline: Option<Pipeline>,
    scheduler: Option<crate::jobs::Scheduler>,
    arbiters: Vec<actix::Arbiter>,
    log: Logger,
}

impl Application {
    /// Builds every part of `role` on the backend the settings select, and binds the public
    /// listener (`HTTP_ADDR`; port 0 picks one). Must run inside an actix System.
    pub async fn build(
        settings: &Settings,
        role: Role,
        log_level: LogLevelHandle,
        log: &Logger,
    ) -> anyhow::Result<Application> {
        match (settings.backend()?, role) {
            (Backend::Stack, _) => Application::build_stack(settings, role, log_level, log).await,
            (Backend::Embedded, Role::Run) => Application::build_embedded(settings, log_level, log).await,
            (Backend::Embedded, Role::Api) => Err(embedded_role_error("api")),
        }
    }

    /// `run` on the full stack (Kafka, PostgreSQL, Redis when `REDIS_URL` is set), or `api`.
    async fn build_stack(
        settings: &Settings,
        role: Role,
        log_level: LogLevelHandle,
        log: &Logger,
    ) -> anyhow::Result<Application> {
        use std::sync::Arc;
        use std::time::Duration;

        use actix::Actor;
        use actors::ports::SystemClock;
        use actors::windows::{KeywordSet, MemoryView, MemoryWindows, WindowAggregatorActor, WindowConfig};

        use crate::cache::delta_writer::DeltaWriter;
        use actors::windows::{CacheReadObserver, RedisSource, WindowReader};
        use futures::FutureExt;

        use crate::cache::answers::RedisBuckets;
        use crate::db::stats::{PgBucketSource, PgStats};
        use crate::http::routes::{LagProbe, Probe, WindowHealth};

        let log = log.new(slog::o!("role" => format!("{role:?}").to_lowercase()));
        let keywords = Arc::new(KeywordSet::new(settings.keywords()));
        let horizon = settings.window_horizon.seconds() as i64;
        let redis = optional_redis(settings).await?;
        let db_timeout = Duration::from_millis(settings.database_timeout_ms);
        let pool = db::pool(settings.database_url.expose(), settings.database_pool_size, db_timeout);
        let pg = PgStats::new(pool.clone(), settings.kafka_topics(), keywords.clone(), db_timeout)
            .keeping_rankings(settings.ranking_kept);

        let metrics = Arc::new(crate::admin::Metrics::with_mailbox_timing(settings.mailbox_metrics));
        let mut arbiters = Vec::new();
        let (aggregator, ingest, lag, kafka_ready): (Option<(_, _)>, _, Option<LagProbe>, Option<Probe>) = match role {
            Role::Run => {
                let deltas = redis.as_ref().map(|redis| {
                    let cache_probe = metrics.actors.probe("delta_writer", "0");
                    let writer =
                        DeltaWriter::start(redis.clone(), keywords.clone(), &metrics.deltas, cache_probe, &log);
                    Arc::new(writer) as Arc<dyn actors::windows::DeltaSink>
                });
                let config = WindowConfig {
                    topics: settings.kafka_topics(),
                    horizon,
                    skew: settings.window_skew_seconds,
                    keywords: keywords.clone(),
                    max_live_services: settings.max_live_services,
                };
                let source = Arc::new(
                    PgBucketSource::new(settings.database_url.expose())
                        .with_timeout(Duration::from_millis(settings.database_rebuild_timeout_ms)),
                );
                let agg_log = log.clone();
                let agg_probe = metrics.actors.probe("window_aggregator", "0");
                let probe = agg_probe.clone();
                // Questions read the buckets through the view, on the HTTP workers' threads.
                let view = MemoryView::new(&config, Arc::new(SystemClock), agg_probe.clone());
                let agg_view = view.clone();
                // Its own thread: queries never wait behind parsing.
                let arbiter = actix::Arbiter::new();
                let aggregator = WindowAggregatorActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    WindowAggregatorActor::new(config, source, deltas, Arc::new(SystemClock), probe, agg_log)
                        .with_view(agg_view)
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
                (Some((aggregator, view)), Some(ingest), Some(lag), Some(ready))
            }
            Role::Api => (None, None, None, None),
        };
        let producer = crate::kafka::intake::IntakeProducer::new(settings)?;
        // `run` is the whole service in one process, the daily jobs included.
        let scheduler = (role == Role::Run).then(|| {
            let jobs = Arc::new(crate::db::daily_jobs::PgDailyJobs::new(settings.database_url.expose(), &log));
            crate::jobs::Scheduler::start(settings, jobs, &metrics, &log)
        });
        let (aggregator, memory_view) = aggregator.unzip();
        let dashboard = Arc::new(crate::http::dashboard::DashboardFeed::new());
        let admin_state = crate::admin::AdminState {
            metrics: metrics.clone(),
            source: ingest.as_ref().map(|i| i.state()),
            aggregator: aggregator.clone(),
            log_level,
            dashboard: Some(dashboard.clone()),
        };
        let (admin, admin_port) = start_admin(settings, admin_state, &log)?;
        let mut reader = WindowReader::new(Arc::new(pg.clone()), Arc::new(SystemClock));
        if let Some(redis) = &redis {
            let cache_results = metrics.cache.clone();
            let count_cache_read: CacheReadObserver =
                Arc::new(move |read| cache_results.with_label_values(&[read.as_str()]).inc());
            reader = reader
                .with_redis(RedisSource {
                    answers: Arc::new(redis.clone()),
                    buckets: Arc::new(RedisBuckets::new(redis.clone(), keywords.clone())),
                })
                .observing_redis(count_cache_read);
        }
        if let (Some(aggregator), Some(view)) = (&aggregator, &memory_view) {
            reader = reader.with_memory(Arc::new(MemoryWindows::new(view.clone(), aggregator.clone())));
        }
        let windows = WindowHealth {
            memory: aggregator,
            memory_view,
            store: actors::windows::Source::Postgres,
            store_up: Arc::new(move || {
                let pg = pg.clone();
                async move { pg.ping().await }.boxed()
            }),
            redis_up: redis.clone().map(|redis| -> crate::http::routes::AsyncProbe<bool> {
                Arc::new(move || {
                    let redis = redis.clone();
                    async move { redis.ping().await }.boxed()
                })
            }),
            redis_watermark: redis.clone().map(|redis| -> crate::http::routes::AsyncProbe<Option<i64>> {
                Arc::new(move || {
                    let redis = redis.clone();
                    async move { redis.watermark().await.ok().flatten() }.boxed()
                })
            }),
        };
        let intake = Arc::new(actors::intake::Intake::new(
            crate::kafka::intake::KafkaPgIntake {
                producer,
                store: db::idempotency::IntakeStore::new(db::idempotency::DirectClients::new(
                    settings.database_url.expose(),
                    db_timeout,
                )),
            },
            settings.parse_rules(),
            Duration::from_millis(settings.ingest_timeout_ms),
        ));
        let search = Arc::new(db::search::PgLogSearch::new(pool.clone(), db_timeout, settings.search_max_scan));
        let summary = Arc::new(db::summary::reader::PgSummaryReader::new(pool, db_timeout));
        // Tails hear every ingest process of the group through PostgreSQL, this one's included.
        let hub = actors::tail::TailHub::with_feed(
            settings.tail_limits(),
            Some(db::tail::feed(settings.database_url.expose().to_owned(), settings.kafka_topics(), log.clone())),
        );
        metrics.tail.watch(hub.clone());
        let tail = Some(crate::http::tail::Tail { hub, heartbeat: Duration::from_millis(settings.tail_heartbeat_ms) });
        let ingest_view = ingest.as_ref().map(|i| i.view());
        let parts =
            Parts { reader, windows, intake, summary, search, lag, kafka_ready, ingest: ingest_view, dashboard, tail };
        let (server, port, grpc) = serve_public(settings, parts, &metrics, &log)?;
        let pipeline = ingest.map(Pipeline::Kafka);
        Ok(Application { metrics, port, admin_port, admin, server, grpc, pipeline, scheduler, arbiters, log })
    }

    /// `run` in the embedded mode: the in-process queue, SQLite (migrated here, so a newcomer runs
    /// one command), memory → SQLite answers, the daily jobs on SQLite; no Kafka, no Redis.
    async fn build_embedded(
        settings: &Settings,
        log_level: LogLevelHandle,
        log: &Logger,
    ) -> anyhow::Result<Application> {
        use std::sync::Arc;
        use std::time::Duration;

        use actix::Actor;
        use actors::ports::SystemClock;
        use actors::windows::{
            KeywordSet, MemoryView, MemoryWindows, Source, WindowAggregatorActor, WindowConfig, WindowReader,
        };
        use futures::FutureExt;

        use crate::embedded::EmbeddedIngest;
        use crate::http::routes::{LagProbe, Probe, WindowHealth};
        use crate::sqlite::stats::{SqliteBucketSource, SqliteStats};
        use crate::sqlite::summary::{SqliteDailyJobs, SqliteSummaryReader};

        let log = log.new(slog::o!("role" => "run", "mode" => "embedded"));
        let db = settings.sqlite_db()?;
        let applied = crate::sqlite::migrate::run_migrations(&db)
            .await
            .with_context(|| format!("preparing the embedded store {}", db.path().display()))?;
        info!(log, "embedded store ready"; "file" => %db.path().display(), "migrations_applied" => applied.len());
        let keywords = Arc::new(KeywordSet::new(settings.keywords()));
        let db_timeout = Duration::from_millis(settings.database_timeout_ms);
        let stats = SqliteStats::new(db.clone(), settings.kafka_topics(), keywords.clone(), db_timeout);
        let metrics = Arc::new(crate::admin::Metrics::with_mailbox_timing(settings.mailbox_metrics));

        let config = WindowConfig {
            topics: settings.kafka_topics(),
            horizon: settings.window_horizon.seconds() as i64,
            skew: settings.window_skew_seconds,
            keywords,
            max_live_services: settings.max_live_services,
        };
        let source = Arc::new(SqliteBucketSource::new(db.clone()));
        let (agg_log, agg_probe) = (log.clone(), metrics.actors.probe("window_aggregator", "0"));
        let probe = agg_probe.clone();
        let view = MemoryView::new(&config, Arc::new(SystemClock), agg_probe.clone());
        let agg_view = view.clone();
        let arbiter = actix::Arbiter::new();
        let aggregator = WindowAggregatorActor::start_in_arbiter(&arbiter.handle(), move |_| {
            WindowAggregatorActor::new(config, source, None, Arc::new(SystemClock), probe, agg_log).with_view(agg_view)
        });
        let aggregator = actors::mailbox::Inbox::new(aggregator, agg_probe);
        // One process, one writer: what it commits is everything there is to tail.
        let hub = actors::tail::TailHub::new(settings.tail_limits());
        metrics.tail.watch(hub.clone());
        let ingest = EmbeddedIngest::start_tailed(
            settings,
            db.clone(),
            Some(hub.clone()),
            Some(aggregator.recipient()),
            Some(aggregator.recipient()),
            &metrics,
            &log,
        )?;
        let state = ingest.state();
        let lag: LagProbe = Arc::new(move || state.lag());
        let state = ingest.state();
        let queue_ready: Probe = Arc::new(move || !state.owned().is_empty());
        let jobs = Arc::new(SqliteDailyJobs::new(db.clone(), &log));
        let scheduler = crate::jobs::Scheduler::start(settings, jobs, &metrics, &log);
        let dashboard = Arc::new(crate::http::dashboard::DashboardFeed::new());
        let admin_state = crate::admin::AdminState {
            metrics: metrics.clone(),
            source: Some(ingest.state()),
            aggregator: Some(aggregator.clone()),
            log_level,
            dashboard: Some(dashboard.clone()),
        };
        let (admin, admin_port) = start_admin(settings, admin_state, &log)?;
        let reader = WindowReader::new(Arc::new(stats.clone()), Arc::new(SystemClock))
            .store_named(Source::Sqlite)
            .with_memory(Arc::new(MemoryWindows::new(view.clone(), aggregator.clone())));
        let windows = WindowHealth {
            memory: Some(aggregator),
            memory_view: Some(view),
            store: Source::Sqlite,
            store_up: Arc::new(move || {
                let stats = stats.clone();
                async move { stats.ping().await }.boxed()
            }),
            redis_up: None,
            redis_watermark: None,
        };
        let intake = Arc::new(actors::intake::Intake::new(
            ingest.intake(),
            settings.parse_rules(),
            Duration::from_millis(settings.ingest_timeout_ms),
        ));
        let search = embedded_search(settings, &db);
        let summary = Arc::new(SqliteSummaryReader::new(db));
        let parts = Parts {
            reader,
            windows,
            intake,
            summary,
            search,
            lag: Some(lag),
            kafka_ready: Some(queue_ready),
            ingest: Some(ingest.view()),
            dashboard,
            tail: Some(crate::http::tail::Tail { hub, heartbeat: Duration::from_millis(settings.tail_heartbeat_ms) }),
        };
        let (server, port, grpc) = serve_public(settings, parts, &metrics, &log)?;
        let pipeline = Some(Pipeline::Embedded(ingest));
        let scheduler = Some(scheduler);
        let arbiters = vec![arbiter];
        Ok(Application { metrics, port, admin_port, admin, server, grpc, pipeline, scheduler, arbiters, log })
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
        match self.pipeline {
            Some(Pipeline::Kafka(ingest)) => ingest.stop().await,
            Some(Pipeline::Embedded(ingest)) => ingest.stop().await,
            None => {}
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_address_never_carries_the_password() {
        assert_eq!(postgres_address("postgres://u:hunter2@db.local:5433/la?sslmode=disable"), "db.local:5433/la");
        assert_eq!(postgres_address("postgres://postgres@127.0.0.1:5432/log_analyzer"), "127.0.0.1:5432/log_analyzer");
    }

    #[test]
    fn the_first_postgres_failures_say_what_to_do() {
        let url = "postgres://u:hunter2@127.0.0.1:5432/la";
        let missing = postgres_hint(url, anyhow::anyhow!("db error: FATAL: database \"la\" does not exist"));
        let text = format!("{missing:#}");
        assert!(text.contains("createdb -h 127.0.0.1 la") && text.contains("scripts/stack.sh up"), "{text}");
        let refused =
            postgres_hint(url, anyhow::anyhow!("error connecting to server: Connection refused (os error 111)"));
        let text = format!("{refused:#}");
        assert!(text.contains("PostgreSQL at 127.0.0.1:5432 does not answer"), "{text}");
        assert!(text.contains("scripts/stack.sh up") && !text.contains("hunter2"), "{text}");
    }

    #[actix_rt::test]
    async fn an_unset_admin_addr_gives_way_when_taken_and_a_set_one_does_not() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut settings = Settings::from_vars(vec![]).unwrap();
        settings.admin_addr = taken.local_addr().unwrap();
        let log = Logger::root(slog::Discard, slog::o!());
        let state = || crate::admin::AdminState {
            metrics: std::sync::Arc::new(crate::admin::Metrics::new()),
            source: None,
            aggregator: None,
            log_level: LogLevelHandle::new(slog::Level::Info),
            dashboard: None,
        };
        let (handle, port) = start_admin(&settings, state(), &log).unwrap();
        assert_ne!(port, settings.admin_addr.port());
        handle.stop(false).await;
        settings.admin_addr_given = true;
        let err = format!("{:#}", start_admin(&settings, state(), &log).unwrap_err());
        assert!(err.contains("binding ADMIN_ADDR") && err.contains("127.0.0.1:0"), "{err}");
    }

    #[test]
    fn the_stack_roles_refuse_the_embedded_mode_with_what_to_set() {
        let text = embedded_role_error("api").to_string();
        assert!(text.contains("`log-analyzer run`") && text.contains("KAFKA_BROKERS"), "{text}");
        assert!(text.contains("postgres:// DATABASE_URL"), "{text}");
    }
}
