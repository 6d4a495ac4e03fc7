//! The live dashboard (issue #19) in a real headless Chromium: tests/browser/dashboard.py drives the
//! page of a `log-analyzer run` started here (the embedded mode: one process and its SQLite file, so
//! a restart on the same port is quick), and these tests assert what it reports.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::api::App;
use crate::embedded::{spawn_child, wait_up, EmbeddedDir};
use crate::helpers::*;

/// The Python with Selenium that scripts/tools.sh installs, once Chromium and its driver are there.
fn selenium_python() -> PathBuf {
    let missing: Vec<&str> = ["chromium", "chromedriver"]
        .into_iter()
        .filter(|tool| {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status();
            !found.is_ok_and(|s| s.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} missing: run scripts/tools.sh (it installs chromium, chromium-driver and Selenium)",
        missing.join(" and ")
    );
    let cache = std::env::var_os("LA_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"))
            .join("log-analyzer")
    });
    let python = cache.join("browser-venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/tools.sh (it installs Selenium there)", python.display());
    python
}

/// The browser script, running: its output line by line, and its stdin for the restart handshake.
struct Script {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Script {
    fn start(args: &[&str]) -> Script {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.py");
        let mut child = Command::new(selenium_python())
            .arg(script)
            .args(args)
            // Selenium Manager would send usage statistics to an outside host.
            .env("SE_AVOID_STATS", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting tests/browser/dashboard.py");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Script { child, lines, output: Vec::new() }
    }

    /// The next line, or `None` once the script ended; fails the test after `timeout`.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                eprintln!("browser: {line}");
                self.output.push(line.clone());
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!("the browser script said nothing for {timeout:?}; so far:\n{}", self.output.join("\n"))
            }
        }
    }

    fn reply(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("writing to the browser script");
    }

    /// Reads to the end and fails unless the script passed; the checks it printed.
    fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.next_line(deadline.saturating_duration_since(Instant::now())).is_some() {}
        let status = self.child.wait().expect("waiting for the browser script");
        let output = self.output.join("\n");
        assert!(status.success() && output.contains("PASS"), "the browser script failed ({status}):\n{output}");
        self.output.into_iter().filter(|l| l.starts_with("CHECK ")).collect()
    }
}

fn has(checks: &[String], name: &str) -> bool {
    checks.iter().any(|c| c.starts_with(&format!("CHECK {name} ok")))
}

/// `run` (embedded) on the given ports, up.
async fn start(dir: &EmbeddedDir, port: u16, admin_port: u16, extra: &[(&str, &str)]) -> App {
    start_with(dir, &["run"], port, admin_port, extra).await
}

async fn start_with(dir: &EmbeddedDir, args: &[&str], port: u16, admin_port: u16, extra: &[(&str, &str)]) -> App {
    let (http_addr, admin_addr) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin_port}"));
    let mut vars = vec![("HTTP_ADDR", http_addr.as_str()), ("ADMIN_ADDR", admin_addr.as_str())];
    vars.extend_from_slice(extra);
    let mut app = App { process: spawn_child(dir, args, &vars), port, admin_port };
    wait_up(&mut app).await;
    app
}

fn service() -> String {
    unique("dash").replace('_', "-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_without_console_errors_and_counts_seven_new_errors_within_three_seconds() {
    let dir = EmbeddedDir::create();
    // Under load (the in-process generator), as the README's screenshot shows it.
    let app = start_with(&dir, &["run", "--generate", "150"], free_port(), free_port(), &[]).await;
    // The README's copy waits a minute, so that its sparklines show one.
    let (screenshot, settle) = if std::env::var_os("UPDATE_DASHBOARD_SCREENSHOT").is_some() {
        (PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png"), "60")
    } else {
        (PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.png", unique("dashboard"))), "3")
    };
    let url = format!("http://127.0.0.1:{}", app.port);
    let service = service();
    let checks = Script::start(&[
        "--url",
        &url,
        "--scenario",
        "live",
        "--service",
        &service,
        "--screenshot",
        screenshot.to_str().expect("UTF-8 path"),
        "--settle",
        settle,
    ])
    .finish();
    for name in [
        "no SEVERE console entry on load",
        "60s errors rise by 7 within 3 s",
        "screenshot",
        "no SEVERE console entry after the updates",
    ] {
        assert!(has(&checks, name), "missing check {name}: {checks:?}");
    }
    assert!(std::fs::metadata(&screenshot).expect("the screenshot").len() > 10_000);
    // The page the browser read is the one served, with its numbers labelled.
    let (status, page) = http(app.port, "GET", "/", b"", &[]).await.expect("GET /");
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-metric="errors""#) && page.contains(r#"data-auth="open""#), "{page}");
    // The operator's copy, on the admin listener, with the actors and the lag per partition.
    let (status, operator) = http(app.admin_port, "GET", "/", b"", &[]).await.expect("admin GET /");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&operator).contains(r#"data-audience="operator""#));
    let (status, actors) = get_json(app.admin_port, "/debug/actors").await;
    assert_eq!(status, 200);
    assert!(actors["lag"].is_object(), "{actors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_on_the_same_port_the_page_reconnects_and_updates_again() {
    let dir = EmbeddedDir::create();
    let (port, admin_port) = (free_port(), free_port());
    let mut app = start(&dir, port, admin_port, &[]).await;
    let url = format!("http://127.0.0.1:{port}");
    let service = service();
    let mut script = Script::start(&["--url", &url, "--scenario", "restart", "--service", &service]);
    loop {
        match script.next_line(Duration::from_secs(90)) {
            Some(line) if line == "RESTART" => break,
            Some(_) => {}
            None => panic!("the script ended before the restart:\n{}", script.output.join("\n")),
        }
    }
    let status = app.process.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", app.process.log_tail());
    let _restarted = {
        let app = start(&dir, port, admin_port, &[]).await;
        script.reply("restarted");
        let checks = script.finish();
        for name in ["reconnecting shown", "live again", "updates after the restart"] {
            assert!(has(&checks, name), "missing check {name}: {checks:?}");
        }
        app
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jwt_on_nothing_is_shown_without_a_token_and_everything_with_one() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    const SECRET: &str = "dashboard-secret-at-least-32-bytes-long";
    let dir = EmbeddedDir::create();
    let app = start(&dir, free_port(), free_port(), &[("JWT_SECRET", SECRET)]).await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let token =
        encode(&Header::default(), &serde_json::json!({"exp": exp}), &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap();
    let url = format!("http://127.0.0.1:{}", app.port);
    let service = service();
    let checks =
        Script::start(&["--url", &url, "--scenario", "jwt", "--service", &service, "--token", &token]).finish();
    for name in [
        "the page asks for a token",
        "no data without a token",
        "a socket without a token is closed with 1008 and no frame",
        "a socket with a bad token is closed with 1008 and no frame",
        "a socket with the token gets frames",
        "data with the token",
    ] {
        assert!(has(&checks, name), "missing check {name}: {checks:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_shows_the_error_lines_as_they_are_stored() {
    let dir = EmbeddedDir::create();
    let app = start(&dir, free_port(), free_port(), &[]).await;
    let url = format!("http://127.0.0.1:{}", app.port);
    let service = service();
    let checks = Script::start(&["--url", &url, "--scenario", "tail", "--service", &service]).finish();
    assert!(has(&checks, "the tail shows those lines"), "{checks:?}");
}

/// Until GET /logs and /logs/tail are served here, the page's side of their contract is checked
/// against a stand-in the script serves itself (the page's own files, the contract's answers).
#[test]
fn the_tail_and_search_panels_read_the_logs_contract() {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/dashboard");
    let checks = Script::start(&["--scenario", "contract", "--assets", assets.to_str().expect("UTF-8 path")]).finish();
    for name in [
        "SSE log events shown, newest first",
        "the cut tail is followed again",
        "heartbeats are not lines",
        "search sends the words",
        "older pages by the answer's next_cursor",
        "newer goes back",
    ] {
        assert!(has(&checks, name), "missing check {name}: {checks:?}");
    }
}
