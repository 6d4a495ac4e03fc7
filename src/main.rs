//! The `log-analyzer` binary: reads config, sets up telemetry, runs the chosen role.

use clap::{Parser, Subcommand};

// The ingest path allocates per event (payload copies, parsed fields); glibc's allocator cost a
// measured ~15% of the process's CPU in a profile of `bench.sh ingest`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use slog::{error, info};

use actors::domain::Window;
use actors::generator::{GeneratorConfig, RunLimit};
use log_analyzer::config::{Backend, LogFormat, Settings};
use log_analyzer::generate::http::HttpSinkOptions;
use log_analyzer::generate::{self, GenerateOptions, Target};
use log_analyzer::{jobs, startup, telemetry};

/// Turns a Kafka stream of application logs into exact, live answers.
#[derive(Parser)]
#[command(name = "log-analyzer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply database migrations: the SQLite file (embedded mode), or PostgreSQL with the logs
    /// partitions ahead and the Kafka topic (the stack).
    Migrate,
    /// Stack only: consume the topic and store every event in PostgreSQL exactly once (stops on SIGINT/SIGTERM).
    Ingest,
    /// Ingest, live windows, the daily jobs and the HTTP API in one process (embedded: all there is).
    Run {
        /// Also generate this many synthetic events per second into the topic (embedded: into POST /ingest).
        #[arg(long, value_parser = non_negative)]
        generate: Option<f64>,
    },
    /// Stack only: the HTTP API (answers from Redis, then PostgreSQL); scale it independently of ingest.
    Api,
    /// Produce synthetic log events (to Kafka, to POST /ingest, or to a file) at a steady rate.
    Generate(Box<GenerateArgs>),
    /// Stack only: the scheduler, the daily summary at SUMMARY_AT and partition maintenance (one leader acts).
    Schedule,
    /// Summarize one day into user_log_summary and keyword_daily (idempotent: replaces the day).
    Summary {
        /// The UTC day, YYYY-MM-DD.
        #[arg(long, value_parser = day)]
        date: chrono::NaiveDate,
    },
    /// Resolve log lines (stdin, or the files named) as ingest would and print each event or reject
    /// as one JSON line; needs no server. Exits 1 when a line was rejected.
    Parse {
        /// Files to read, one log line per line; none: stdin.
        files: Vec<std::path::PathBuf>,
        /// The service of lines that name none, as `POST /ingest?service=` (default: the first topic).
        #[arg(long)]
        service: Option<String>,
    },
    /// Find stored log lines (as GET /logs does) and print them newest first, one per line, like
    /// grep: `<ts> <LEVEL> <service> <message>`. Reads the store DATABASE_URL names. Exits 0 when
    /// something matched, 1 when nothing did, 2 for a malformed search or an unreachable store.
    Search(SearchArgs),
    /// Dead letters (log_rejects): list them, or replay them through today's parser.
    #[command(subcommand)]
    Rejects(RejectsCommand),
    /// Stack only: offsets ingest had to skip because Kafka no longer had them (offset_gaps).
    #[command(subcommand)]
    Gaps(GapsCommand),
}

#[derive(clap::Args)]
struct SearchArgs {
    /// Terms, all required (tokenized as messages are); `-term` excludes one token. Several
    /// arguments are joined with spaces.
    q: Vec<String>,
    /// Only this service.
    #[arg(long)]
    service: Option<String>,
    /// One level (error), or a minimum (warn+).
    #[arg(long)]
    level: Option<String>,
    /// Events at or after this time: RFC 3339 or epoch seconds.
    #[arg(long)]
    from: Option<String>,
    /// Events before this time: RFC 3339 or epoch seconds.
    #[arg(long)]
    to: Option<String>,
    /// Events per page, 1-1000 (with --all: per query to the store).
    #[arg(long, default_value = "100")]
    limit: String,
    /// Print each event as one JSON object per line (as GET /logs answers it).
    #[arg(long)]
    json: bool,
    /// Follow the cursor to the end of the range instead of stopping after one page.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum GapsCommand {
    /// Print recorded gaps, oldest first: id, detected at, topic/partition, from → to, messages lost.
    List {
        /// Only gaps of this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Print at most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand)]
enum RejectsCommand {
    /// Print rejects, oldest first: id, time, position, reason, size, replayed, detail, payload start.
    List {
        #[command(flatten)]
        filter: RejectArgs,
        /// Print at most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Store in `logs` the rejects that parse now (each at most once) and print what happened.
    Replay {
        #[command(flatten)]
        filter: RejectArgs,
    },
}

#[derive(clap::Args)]
struct RejectArgs {
    /// Only rejects stored at or after this time (RFC 3339, or a UTC day YYYY-MM-DD).
    #[arg(long, value_parser = since)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only rejects with this reason code (not_json, too_large, ...).
    #[arg(long)]
    reason: Option<String>,
}

impl RejectArgs {
    fn filter(&self) -> log_analyzer::db::rejects::RejectFilter {
        log_analyzer::db::rejects::RejectFilter { since: self.since, reason: self.reason.clone() }
    }
}

fn day(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("{s:?} is not a day YYYY-MM-DD"))
}

fn since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    day(s).map(log_analyzer::db::summary::day_start).map_err(|_| format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"))
}

#[derive(clap::Parser)]
struct GenerateArgs {
    /// Events per second; 0 means as fast as the target accepts them [default: 1000].
    #[arg(long, default_value_t = 1000.0, value_parser = non_negative, hide_default_value = true)]
    rate: f64,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s, 10m); without --count or --duration, run until interrupted.
    #[arg(long, value_parser = |s: &str| Window::parse_unbounded(s).map_err(|e| e.to_string()))]
    duration: Option<Window>,
    /// kafka (the KAFKA_TOPIC topic), http://HOST:PORT (NDJSON batches to POST /ingest), ndjson:PATH,
    /// or csv:PATH (rows of the logs table, valid events only).
    #[arg(long, default_value = "kafka")]
    to: Target,
    /// With --to http://…: sent as `Authorization: Bearer TOKEN` (when the server sets JWT_SECRET).
    #[arg(long, env = "GENERATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With --to http://…: events per POST.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// With --to http://…: requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    in_flight: u64,
    /// Same seed, same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of distinct services.
    #[arg(long, default_value_t = 12)]
    services: usize,
    /// Number of distinct users (Zipf-distributed: a few are very active).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Share of events at level error or fatal.
    #[arg(long, default_value_t = 0.05, value_parser = ratio)]
    error_ratio: f64,
    /// Share of deliberately malformed payloads (exactly floor(count × ratio)).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    malformed_ratio: f64,
    /// Share of events stamped up to --late-max in the past (late, out of order).
    #[arg(long, default_value_t = 0.02, value_parser = ratio)]
    late_ratio: f64,
    /// How far in the past late events go (e.g. 2m; with --late-ratio 1 and 1h: backfill an hour).
    #[arg(long, default_value = "2m", value_parser = |s: &str| Window::parse_unbounded(s).map_err(|e| e.to_string()))]
    late_max: Window,
    /// Share of non-error messages that carry a keyword.
    #[arg(long, default_value_t = 0.2, value_parser = ratio)]
    keyword_ratio: f64,
    /// The keywords messages carry, comma-separated (default: TRACKED_KEYWORDS).
    #[arg(long, value_delimiter = ',')]
    keywords: Option<Vec<String>>,
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{s:?} is not a rate (events per second, 0 for unlimited)")),
    }
}

impl GenerateArgs {
    fn options(&self, settings: &Settings) -> GenerateOptions {
        GenerateOptions {
            rate: (self.rate > 0.0).then_some(self.rate),
            limit: RunLimit { count: self.count, duration: self.duration.map(Window::as_duration) },
            target: self.to.clone(),
            config: GeneratorConfig {
                seed: self.seed,
                services: self.services,
                users: self.users,
                error_ratio: self.error_ratio,
                malformed_ratio: self.malformed_ratio,
                late_ratio: self.late_ratio,
                late_max_ms: self.late_max.seconds() as i64 * 1_000,
                keyword_ratio: self.keyword_ratio,
                keywords: self.keywords.clone().unwrap_or_else(|| settings.tracked_keywords.clone()),
            },
            http: HttpSinkOptions {
                batch_events: self.batch as usize,
                in_flight: self.in_flight as usize,
                token: self.token.clone(),
                ..HttpSinkOptions::default()
            },
        }
    }
}

/// `log-analyzer parse`: no runtime, no logger (stdout carries only the answers).
fn parse(settings: &Settings, files: &[std::path::PathBuf], service: Option<&str>) -> std::process::ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut total = jobs::ParseCounts::default();
    let result: anyhow::Result<()> = (|| {
        if files.is_empty() {
            total = jobs::parse_lines(settings, std::io::stdin().lock(), service, &mut out)?;
        }
        for path in files {
            let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
            let counts = jobs::parse_lines(settings, std::io::BufReader::new(file), service, &mut out)?;
            total.events += counts.events;
            total.rejects += counts.rejects;
        }
        Ok(())
    })();
    drop(out);
    if let Err(e) = result {
        eprintln!("log-analyzer: {e:#}");
        return std::process::ExitCode::from(2);
    }
    eprintln!("log-analyzer parse: {} events, {} rejects", total.events, total.rejects);
    if total.rejects > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// `log-analyzer search`: no logger (stdout carries only the lines), exit codes as grep's.
fn search(settings: &Settings, args: &SearchArgs) -> std::process::ExitCode {
    use std::io::Write;
    let q = args.q.join(" ");
    let params = actors::search::SearchParams {
        q: (!q.is_empty()).then_some(q.as_str()),
        service: args.service.as_deref(),
        level: args.level.as_deref(),
        from: args.from.as_deref(),
        to: args.to.as_deref(),
        limit: Some(args.limit.as_str()),
        cursor: None,
    };
    let mut query = match params.query() {
        Ok(query) => query,
        Err(bad) => {
            eprintln!("log-analyzer search: {bad} ({})", bad.code);
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("log-analyzer search: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let result: anyhow::Result<()> = runtime.block_on(async {
        // Made inside the runtime: the pool's connections live on it.
        let store = startup::search_port(settings)?;
        loop {
            let page = store.search(&query).await?;
            for event in &page.events {
                if args.json {
                    serde_json::to_writer(&mut out, event)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{}", grep_line(event))?;
                }
                printed += 1;
            }
            out.flush()?;
            match page.next_cursor {
                // A truncated page goes on too: a bounded scan is a reason to ask again, not to stop.
                Some(next) if args.all => query.after = Some(next),
                Some(_) if page.events.is_empty() && page.truncated => {
                    eprintln!(
                        "log-analyzer search: the first SEARCH_MAX_SCAN rows held no match; --all goes on through the range"
                    );
                    break;
                }
                _ => break,
            }
        }
        Ok(())
    });
    drop(out);
    match result {
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("log-analyzer search: {e:#}");
            std::process::ExitCode::from(2)
        }
        Ok(()) if printed == 0 => std::process::ExitCode::FAILURE,
        Ok(()) => std::process::ExitCode::SUCCESS,
    }
}

/// `<ts> <LEVEL> <service> <message>`, the message's line breaks escaped so that one event is one line.
fn grep_line(event: &actors::search::FoundEvent) -> String {
    let message = event.message.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r");
    format!(
        "{} {} {} {message}",
        event.ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        event.level.as_str().to_uppercase(),
        event.service
    )
}

/// Panics are logged as one structured line like every other error, not as loose text on stderr
/// (an HTTP handler's panic is also answered 500 and counted by the server).
fn install_panic_hook(log: &slog::Logger) {
    let log = log.clone();
    std::panic::set_hook(Box::new(move |info| {
        let text = log_analyzer::http::limits::panic_text(info.payload());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        slog::crit!(log, "panic"; "panic" => text, "location" => location, "thread" => thread,
                    "backtrace" => std::backtrace::Backtrace::capture().to_string());
    }));
}

/// The format the logger writes (as `telemetry::init_logger` chooses it).
fn log_format(settings: &Settings) -> LogFormat {
    use std::io::IsTerminal;
    settings.log_format.unwrap_or(if std::io::stderr().is_terminal() { LogFormat::Term } else { LogFormat::Json })
}

/// `search`'s terms may start with `-` (exclusions): every argument that is not one of its options
/// is moved behind a `--`, so that clap takes `-retry` as a term, not as an unknown flag.
fn terms_after_double_dash(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if args.get(1).and_then(|a| a.to_str()) != Some("search") {
        return args;
    }
    const WITH_VALUE: [&str; 5] = ["--service", "--level", "--from", "--to", "--limit"];
    const FLAGS: [&str; 4] = ["--json", "--all", "-h", "--help"];
    let (mut options, mut terms) = (args[..2].to_vec(), Vec::new());
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_str().unwrap_or("");
        let name = text.split_once('=').map_or(text, |(name, _)| name);
        if text == "--" {
            terms.extend(rest.by_ref().cloned());
        } else if WITH_VALUE.contains(&text) {
            options.push(arg.clone());
            options.extend(rest.next().cloned());
        } else if WITH_VALUE.contains(&name) || FLAGS.contains(&text) {
            options.push(arg.clone());
        } else {
            terms.push(arg.clone());
        }
    }
    options.push("--".into());
    options.extend(terms);
    options
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_from(terms_after_double_dash(std::env::args_os().collect()));
    // A missing .env is normal; a broken one is worth saying.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("log-analyzer: ignoring .env: {e}");
        }
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("log-analyzer: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Command::Parse { files, service } = &cli.command {
        return parse(&settings, files, service.as_deref());
    }
    if let Command::Search(args) = &cli.command {
        return search(&settings, args);
    }
    let (log, level) = telemetry::init_logger(&settings);
    install_panic_hook(&log);
    let result = actix_rt::System::new().block_on(async {
        match cli.command {
            Command::Migrate => startup::migrate_any(&settings, &log).await.map(|done| println!("{done}")),
            Command::Ingest => startup::run_ingest(&settings, level, &log).await,
            Command::Run { generate } => {
                let app = startup::Application::build(&settings, startup::Role::Run, level, &log).await?;
                if let Some(rate) = generate.filter(|r| *r > 0.0) {
                    // The embedded mode has no topic: its generator posts to this process's own intake.
                    let to = match settings.backend()? {
                        Backend::Stack => "kafka".to_owned(),
                        Backend::Embedded => format!("http://127.0.0.1:{}", app.port()),
                    };
                    let args = GenerateArgs::parse_from(["generate", "--rate", &rate.to_string(), "--to", &to]);
                    let options = args.options(&settings);
                    let (settings, log) = (settings.clone(), log.clone());
                    let stats = app.metrics().watch_generator();
                    let probe = app.metrics().actors.probe("generator", "0");
                    actix_rt::spawn(async move {
                        if let Err(e) = generate::run_observed(&settings, options, stats, Some(probe)).await {
                            error!(log, "the generator stopped"; "error" => format!("{e:#}"));
                        }
                    });
                }
                app.run_until_stopped().await
            }
            Command::Api => {
                startup::Application::build(&settings, startup::Role::Api, level, &log).await?.run_until_stopped().await
            }
            Command::Schedule => startup::run_schedule(&settings, level, &log).await,
            Command::Summary { date } => {
                let today = chrono::Utc::now().date_naive();
                if let Some(warning) = jobs::outside_retention(date, today, settings.retention_days) {
                    eprintln!("log-analyzer: warning: {warning}");
                }
                let run = jobs::summary(&settings, date, &log).await?;
                println!(
                    "{date}: {} users, {} keywords, {} invalid rows, {} ms",
                    run.rows,
                    run.keywords,
                    run.invalid_rows.values().sum::<u64>(),
                    run.duration_ms
                );
                Ok(())
            }
            Command::Rejects(RejectsCommand::List { filter, limit }) => {
                for row in jobs::rejects_list(&settings, &filter.filter(), limit).await? {
                    println!("{}", jobs::format_reject(&row));
                }
                Ok(())
            }
            Command::Rejects(RejectsCommand::Replay { filter }) => {
                let report = jobs::rejects_replay(&settings, &filter.filter()).await?;
                info!(log, "replay done"; "replayed" => report.replayed,
                      "still_invalid" => serde_json::to_string(&report.still_invalid).unwrap_or_default(),
                      "skipped" => serde_json::to_string(&report.skipped).unwrap_or_default());
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            }
            Command::Generate(args) => {
                if matches!(args.to, Target::Kafka) && settings.backend()? == Backend::Embedded {
                    anyhow::bail!(
                        "the embedded mode has no Kafka topic: send to the running server with \
                         `--to http://127.0.0.1:{}` (or set KAFKA_BROKERS and a postgres:// DATABASE_URL)",
                        settings.http_addr.port()
                    );
                }
                generate::run(&settings, args.options(&settings)).await.map(drop)
            }
            Command::Gaps(GapsCommand::List { topic, limit }) => {
                if settings.backend()? == Backend::Embedded {
                    anyhow::bail!("the embedded queue skips no offsets: `gaps` is about Kafka (the full stack)");
                }
                let url = settings.database_url.expose();
                let gaps = log_analyzer::db::offset_store::list_gaps(url, topic.as_deref(), limit).await;
                for gap in gaps.map_err(|e| startup::postgres_hint(url, e))? {
                    let lost = if gap.to_offset >= gap.from_offset {
                        format!("{} messages never stored", gap.to_offset - gap.from_offset)
                    } else {
                        "offsets went back (topic recreated?); restarted at the earliest".to_owned()
                    };
                    println!(
                        "{}\t{}\t{}/{}\t{} -> {}\t{lost}",
                        gap.id,
                        gap.detected_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        gap.topic,
                        gap.partition,
                        gap.from_offset,
                        gap.to_offset
                    );
                }
                Ok(())
            }
            Command::Parse { .. } | Command::Search(_) => unreachable!("handled before the runtime starts"),
        }
    });
    // The hook holds a logger: dropping it lets the last `drop(log)` below flush the async drain.
    drop(std::panic::take_hook());
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A person reads one plain line. JSON logs also get theirs, for a collector, written
            // here and now: the async logger may still be held by actors and lose a line at exit.
            drop(log);
            if log_format(&settings) == LogFormat::Json {
                let line = serde_json::json!({
                    "msg": "failed", "level": "ERRO", "ts": chrono::Utc::now().to_rfc3339(),
                    "app": "log-analyzer", "version": env!("CARGO_PKG_VERSION"), "error": format!("{e:#}"),
                });
                eprintln!("{line}");
            }
            eprintln!("log-analyzer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_may_start_with_a_hyphen_anywhere() {
        let args = |line: &str| terms_after_double_dash(line.split(' ').map(Into::into).collect());
        let cli = Cli::parse_from(args("la search timeout -retry --limit 6 --level=warn+ -db --all"));
        let Command::Search(search) = cli.command else { panic!("not search") };
        assert_eq!(search.q, ["timeout", "-retry", "-db"]);
        assert_eq!((search.limit.as_str(), search.level.as_deref(), search.all), ("6", Some("warn+"), true));
        let same = args("la migrate --x");
        assert_eq!(same.len(), 3, "other commands are left alone");
    }
}
