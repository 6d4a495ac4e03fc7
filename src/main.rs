//! The `log-analyzer` binary: reads config, sets up telemetry, runs the chosen role.

use clap::{Parser, Subcommand};
use slog::{error, info};

use log_analyzer::config::Settings;
use log_analyzer::ingest::Ingest;
use log_analyzer::{startup, telemetry};

/// Turns a Kafka stream of application logs into exact, live answers.
#[derive(Parser)]
#[command(name = "log-analyzer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply database migrations, create the logs partitions ahead, and create the Kafka topic.
    Migrate,
    /// Consume the topic and store every event in PostgreSQL exactly once (stops on SIGINT/SIGTERM).
    Ingest,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
    let (log, _level) = telemetry::init_logger(&settings);
    let result = actix_rt::System::new().block_on(async {
        match cli.command {
            Command::Migrate => startup::migrate(&settings, &log).await.map(drop),
            Command::Ingest => {
                let ingest = Ingest::start(&settings, None, &log)?;
                startup::shutdown_signal().await;
                info!(log, "shutdown requested");
                ingest.stop().await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!(log, "failed"; "error" => format!("{e:#}"));
            drop(log);
            eprintln!("log-analyzer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
