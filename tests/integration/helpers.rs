//! Shared test plumbing: where the stack is, fresh per-test resources, and deadline-bound waiting.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log_analyzer::config::Settings;

/// Addresses of the real services, from the same variables the application reads.
pub struct Stack {
    pub kafka_brokers: String,
    pub database_url: String,
    pub redis_url: String,
}

pub fn stack() -> Stack {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    Stack {
        kafka_brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
        database_url: var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/log_analyzer"),
        redis_url: var("REDIS_URL", "redis://127.0.0.1:6379"),
    }
}

/// A name no other test (or earlier run) uses: `<prefix>_<pid>_<micros>_<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() % 1_000_000_000_000;
    format!("{prefix}_{}_{micros}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A database of its own for one test, dropped when the test calls `drop_db`.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        TestDatabase::create_on(&stack().database_url).await
    }

    /// A fresh database on the server `admin_url` points at.
    pub async fn create_on(admin_url: &str) -> TestDatabase {
        let admin_url = admin_url.to_owned();
        let name = unique("la_test");
        let client = connect(&admin_url).await;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        let url = with_database(&admin_url, &name);
        TestDatabase { name, url, admin_url }
    }

    /// A plain tokio-postgres client to this database, for checking what the application wrote.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    pub async fn drop_db(self) {
        let client = connect(&self.admin_url).await;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await
            .expect("DROP DATABASE");
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = base.rfind('/').expect("database URL has a path");
    format!("{}/{name}{query}", &base[..cut])
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e} (is `scripts/stack.sh up` running?)"));
    tokio::spawn(connection);
    client
}

/// Settings for a test: the stack's addresses plus the test's own overrides.
pub fn settings(overrides: &[(&str, &str)]) -> Settings {
    let s = stack();
    let mut vars = std::collections::BTreeMap::from([
        ("KAFKA_BROKERS".to_owned(), s.kafka_brokers),
        ("DATABASE_URL".to_owned(), s.database_url),
        ("REDIS_URL".to_owned(), s.redis_url),
        // Tests run side by side: none may take the default gRPC port.
        ("GRPC_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::from_vars(vars).expect("test settings")
}

#[allow(dead_code)] // the ingest and API tests wait with it
/// Polls `check` until it yields `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A seeded random source, so failing runs replay by seed.
pub struct Rng(rand::rngs::SmallRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            rand::RngExt::random_range(&mut self.0, 0..n)
        }
    }
}

/// A producer tuned for pushing many test messages quickly (acks=all).
pub fn producer(brokers: &str) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.max.bytes", "10485760")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .expect("producer")
}

/// One message to produce.
#[derive(Clone)]
pub struct Outgoing {
    pub partition: i32,
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
}

/// Produces every message and waits until all are acknowledged.
pub async fn produce_all(producer: &rdkafka::producer::FutureProducer, topic: &str, messages: &[Outgoing]) {
    use rdkafka::producer::FutureRecord;
    for chunk in messages.chunks(20_000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for m in chunk {
            let record: FutureRecord<'_, (), [u8]> =
                FutureRecord::to(topic).partition(m.partition).timestamp(m.timestamp_ms).payload(&m.payload);
            deliveries.push(producer.send(record, Duration::from_secs(60)));
        }
        for result in futures::future::join_all(deliveries).await {
            result.map_err(|(e, _)| e).expect("produce");
        }
    }
}

/// A `log-analyzer` child process (the real binary), logging to a file under target/.
pub struct ChildProcess {
    pub child: std::process::Child,
    pub log_path: std::path::PathBuf,
}

impl ChildProcess {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> ChildProcess {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let log_path = dir.join(format!("{}.log", unique("child")));
        let log = std::fs::File::create(&log_path).expect("child log file");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_log-analyzer"));
        command.args(args).env("LOG_FORMAT", "json").env("LOG_LEVEL", "info").env("GRPC_ADDR", "127.0.0.1:0");
        for (k, v) in env {
            command.env(k, v);
        }
        let child =
            command.stdout(log.try_clone().expect("log file")).stderr(log).spawn().expect("starting log-analyzer");
        ChildProcess { child, log_path }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (or a failure after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit within {timeout:?}; log: {:?}", self.log_path);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of stored next offsets of a topic's partitions: equals the messages produced once all are in.
pub async fn stored_total(client: &tokio_postgres::Client, topic: &str) -> i64 {
    client
        .query_one("SELECT COALESCE(sum(next_offset), 0)::bigint FROM kafka_offsets WHERE topic = $1", &[&topic])
        .await
        .map(|row| row.get(0))
        .unwrap_or(-1)
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, its own port), for tests that
/// stop the database: the shared stack's server stays up for every other test.
pub struct OwnedPostgres {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl OwnedPostgres {
    pub fn start() -> OwnedPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = std::env::temp_dir().join(unique("la_pg"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = OwnedPostgres { port, dir, bin };
        if is_root() {
            // PostgreSQL refuses to run as root.
            run(std::process::Command::new("chown").args(["-R", "postgres:postgres"]).arg(&pg.dir));
        }
        let data = pg.dir.join("data");
        run(pg.as_postgres("initdb").args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(&data));
        pg.resume();
        pg
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash or an outage would.
    pub fn halt(&self) {
        run(self.as_postgres("pg_ctl").args(["stop", "-m", "immediate", "-w", "-D"]).arg(self.dir.join("data")));
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        run(self
            .as_postgres("pg_ctl")
            .args(["start", "-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.join("server.log"))
            .arg("-D")
            .arg(self.dir.join("data")));
    }

    /// SIGSTOP to the postmaster and every backend: connections stay open but nothing answers, as
    /// with a hung server or a dead link (no error ever arrives by itself).
    #[allow(dead_code)] // the store robustness tests freeze their server
    pub fn freeze(&self) {
        // The postmaster first, so that it forks no backend that escapes the second listing.
        if let Some(&postmaster) = self.server_pids().first() {
            signal(postmaster, "-STOP");
        }
        for pid in self.server_pids() {
            signal(pid, "-STOP");
        }
    }

    /// SIGCONT to the same processes: the server carries on where it stood.
    #[allow(dead_code)]
    pub fn thaw(&self) {
        for pid in self.server_pids().into_iter().rev() {
            signal(pid, "-CONT");
        }
    }

    /// The postmaster (first line of postmaster.pid) and its children, postmaster first.
    fn server_pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid")).unwrap_or_default();
        let Some(postmaster) = text.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else {
            return Vec::new();
        };
        let children = std::process::Command::new("pgrep")
            .args(["-P", &postmaster.to_string()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        std::iter::once(postmaster).chain(children.lines().filter_map(|l| l.trim().parse().ok())).collect()
    }

    fn as_postgres(&self, tool: &str) -> std::process::Command {
        let program = self.bin.join(tool);
        if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }
}

impl Drop for OwnedPostgres {
    fn drop(&mut self) {
        // A frozen server cannot stop: wake it first.
        for pid in self.server_pids() {
            signal(pid, "-CONT");
        }
        let _ = self.as_postgres("pg_ctl").args(["stop", "-m", "immediate", "-D"]).arg(self.dir.join("data")).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(command: &mut std::process::Command) {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free TCP port on loopback (bound and released; good enough for a test's own server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal HTTP/1.1 exchange over loopback (no client library needed): status and body.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Option<(u16, Vec<u8>)> {
    // awc's client is not Send: it runs on a blocking thread with a runtime of its own, so the
    // returned future stays Send (tests spawn it) and plain #[tokio::test]s can call it.
    let (method, url) = (method.to_owned(), format!("http://127.0.0.1:{port}{path}"));
    let (body, headers): (Vec<u8>, Vec<(String, String)>) =
        (body.to_vec(), headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    let exchange = move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        tokio::task::LocalSet::new().block_on(&runtime, async move {
            let client = awc::Client::builder().disable_timeout().disable_redirects().no_default_headers().finish();
            let method = awc::http::Method::from_bytes(method.as_bytes()).ok()?;
            let mut request = client.request(method, url).force_close();
            for (name, value) in &headers {
                request = request.append_header((name.as_str(), value.as_str()));
            }
            let mut response = request.send_body(body).await.ok()?;
            let body = response.body().limit(usize::MAX).await.ok()?;
            Some((response.status().as_u16(), body.to_vec()))
        })
    };
    tokio::task::spawn_blocking(exchange).await.ok()?
}

/// GET returning the status and the JSON body.
pub async fn get_json(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(port, "GET", path, b"", &[]).await.unwrap_or_else(|| panic!("GET {path} failed"));
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("GET {path}: not JSON: {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// A Redis server of the test's own, on its own port, that the test can freeze and thaw.
pub struct OwnedRedis {
    pub port: u16,
    child: std::process::Child,
}

impl OwnedRedis {
    pub fn start() -> OwnedRedis {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/stack.sh up installs it)");
        let redis = OwnedRedis { port, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {port} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: connections hang, as with a Redis that stopped answering.
    pub fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    pub fn thaw(&self) {
        signal(self.child.id(), "-CONT");
    }
}

impl Drop for OwnedRedis {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// A client binary scripts/tools.sh installed (TOOLS_BIN, else ~/.cache/log-analyzer/bin).
pub fn tool(name: &str) -> std::path::PathBuf {
    use std::path::PathBuf;
    let dir = std::env::var_os("TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/log-analyzer/bin"));
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run scripts/tools.sh", path.display());
    path
}

/// What telemetrygen sent, as stored: every row has the service, level and body it was given, a
/// time between `before` and now, `order` among the record attributes and `resource` (key, value)
/// among the resource's, and `service.name` as the service rather than an attribute.
pub fn assert_telemetrygen_rows(
    found: &[tokio_postgres::Row],
    (service, level, message): (&str, i16, &str),
    order: &str,
    resource: (&str, &str),
    before: chrono::DateTime<chrono::Utc>,
) {
    for row in found {
        let (s, l, m): (String, i16, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((s.as_str(), l, m.as_str()), (service, level, message));
        let ts: chrono::DateTime<chrono::Utc> = row.get(3);
        assert!(ts >= before && ts <= chrono::Utc::now(), "ts {ts} is the record's time");
        let attrs: serde_json::Value = row.get(4);
        assert_eq!(attrs["attributes"]["order"], order, "{attrs}");
        assert_eq!(attrs["resource"][resource.0], resource.1, "{attrs}");
        assert!(attrs["resource"].get("service.name").is_none(), "service.name is the service, not an attr");
    }
}
