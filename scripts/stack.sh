#!/usr/bin/env bash
# The real local stack for development, tests and CI, without Docker:
#   Apache Kafka 4.x (KRaft, one combined broker+controller) from Maven Central jars, run on Java 17;
#   PostgreSQL and Redis from Debian's packages.
# Everything listens on loopback; Kafka and Redis data live under .stack/ (git-ignored).
#
#   scripts/stack.sh up       install what is missing, start what is down, wait until each answers
#   scripts/stack.sh down     stop what this script started
#   scripts/stack.sh status   one line per service
#   scripts/stack.sh env      KAFKA_BROKERS=… DATABASE_URL=… REDIS_URL=… for `eval "$(scripts/stack.sh env)"`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$ROOT/.stack}"
KAFKA_PORT="${STACK_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${STACK_KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${STACK_PG_PORT:-5432}"
REDIS_PORT="${STACK_REDIS_PORT:-6379}"
DB_NAME="${STACK_DB_NAME:-log_analyzer}"
KAFKA_HEAP="${STACK_KAFKA_HEAP:-512m}"

KAFKA_DIR="$STACK_DIR/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
REDIS_DIR="$STACK_DIR/redis"

log() { printf 'stack: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Runs apt-get update at most once per `up`, and only when something must be installed.
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "cannot install $* here: no apt-get; install them by hand"
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Waits up to $2 seconds for the command $1 to succeed.
wait_for() {
  local check="$1" deadline=$((SECONDS + $2))
  until $check; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# ---------------------------------------------------------------- Kafka

# A Kafka Metadata request (v4: all topics) over a raw socket; succeeds when the broker lists node 1.
kafka_metadata_ok() {
  python3 - "$KAFKA_PORT" <<'PY' 2>/dev/null
import socket, struct, sys
port = int(sys.argv[1])
client = b"stack.sh"
# header v1: api_key=3 (Metadata), api_version=4, correlation_id=7, client_id; body: topics=null, no auto-create
body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">ib", -1, 0)
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    s.settimeout(2)
    s.sendall(struct.pack(">i", len(body)) + body)
    head = b""
    while len(head) < 20:
        chunk = s.recv(20 - len(head))
        if not chunk:
            sys.exit(1)
        head += chunk
_, corr, _throttle, brokers, node = struct.unpack(">iiiii", head)
sys.exit(0 if corr == 7 and brokers >= 1 and node == 1 else 1)
PY
}

kafka_fetch_jars() {
  if ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; then return; fi
  command -v mvn >/dev/null || apt_install maven
  log "fetching Apache Kafka jars (deploy/kafka/pom.xml)"
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -B -q -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" >"$STACK_DIR/mvn.log" 2>&1 ||
    { tail -n 30 "$STACK_DIR/mvn.log" >&2; die "mvn could not fetch the Kafka jars"; }
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
}

java17() {
  local java
  for java in "${JAVA_HOME:-}/bin/java" /usr/lib/jvm/java-17-openjdk-amd64/bin/java "$(command -v java || true)"; do
    if [ -x "$java" ] && "$java" -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then
      echo "$java"
      return
    fi
  done
  apt_install openjdk-17-jre-headless
  echo /usr/lib/jvm/java-17-openjdk-amd64/bin/java
}

kafka_write_config() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  cat >"$KAFKA_DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=268435456
message.max.bytes=10485760
replica.fetch.max.bytes=10485760
EOF
  cat >"$KAFKA_DIR/log4j2.properties" <<EOF
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$KAFKA_DIR/logs/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
logger.apache.name=org.apache.kafka
logger.apache.level=WARN
logger.server.name=kafka.server.KafkaServer
logger.server.level=INFO
logger.broker.name=kafka.server.BrokerServer
logger.broker.level=INFO
EOF
}

kafka_up() {
  if kafka_metadata_ok; then return; fi
  if port_open "$KAFKA_PORT"; then
    # Something listens but does not answer yet: a broker that is still starting, give it time.
    wait_for kafka_metadata_ok 60 && return
    die "port $KAFKA_PORT is taken by something that is not a working Kafka broker"
  fi
  mkdir -p "$STACK_DIR"
  kafka_fetch_jars
  local java
  java="$(java17)"
  kafka_write_config
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(cat "$KAFKA_DIR/cluster.id" 2>/dev/null || "$java" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid)"
    echo "$cluster_id" >"$KAFKA_DIR/cluster.id"
    log "formatting Kafka storage (cluster $cluster_id)"
    "$java" -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$KAFKA_DIR/server.properties" \
      --ignore-formatted >"$KAFKA_DIR/logs/format.log" 2>&1 ||
      { cat "$KAFKA_DIR/logs/format.log" >&2; die "kafka storage format failed"; }
  fi
  log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
  nohup setsid "$java" -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >"$KAFKA_DIR/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$KAFKA_DIR/kafka.pid"
  if ! wait_for kafka_metadata_ok 90; then
    tail -n 40 "$KAFKA_DIR/logs/stdout.log" "$KAFKA_DIR/logs/server.log" >&2 || true
    die "Kafka did not answer a metadata request within 90 s"
  fi
}

kafka_down() {
  local pid
  pid="$(cat "$KAFKA_DIR/kafka.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "stopping Kafka (pid $pid)"
    kill "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$KAFKA_DIR/kafka.pid"
}

# ---------------------------------------------------------------- PostgreSQL

pg_ok() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }
pg_psql() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

pg_up() {
  if ! pg_ok; then
    command -v pg_lsclusters >/dev/null || apt_install postgresql
    local version
    version="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1; exit }')"
    if [ -z "$version" ]; then
      version="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"
      [ -n "$version" ] || { apt_install postgresql && version="$(ls /usr/lib/postgresql | sort -n | tail -n 1)"; }
      pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main" ||
        pg_createcluster -p "$PG_PORT" "$version" main >/dev/null
    fi
    local conf="/etc/postgresql/$version/main"
    # Loopback only, and trust for loopback so the test user needs no password.
    if ! grep -q 'log-analyzer stack' "$conf/pg_hba.conf"; then
      {
        echo '# log-analyzer stack: trust loopback'
        echo 'host all all 127.0.0.1/32 trust'
        echo 'host all all ::1/128 trust'
        cat "$conf/pg_hba.conf"
      } >"$conf/pg_hba.conf.new"
      mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
      chown postgres:postgres "$conf/pg_hba.conf"
    fi
    mkdir -p "$conf/conf.d"
    cat >"$conf/conf.d/log-analyzer.conf" <<EOF
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = 256MB
max_wal_size = 2GB
EOF
    log "starting PostgreSQL $version on 127.0.0.1:$PG_PORT"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
      { tail -n 30 "/var/log/postgresql/postgresql-$version-main.log" >&2; die "PostgreSQL did not start"; }
    touch "$STACK_DIR/pg.started-by-stack"
    echo "$version" >"$STACK_DIR/pg.version"
    if ! wait_for pg_ok 30; then
      tail -n 30 "/var/log/postgresql/postgresql-$version-main.log" >&2 || true
      die "PostgreSQL did not answer within 30 s"
    fi
  fi
  if ! pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    log "creating database $DB_NAME"
    pg_psql -d postgres -c "CREATE DATABASE $DB_NAME"
  fi
}

pg_down() {
  if [ -f "$STACK_DIR/pg.started-by-stack" ]; then
    local version
    version="$(cat "$STACK_DIR/pg.version")"
    log "stopping PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main stop -m fast || true
    rm -f "$STACK_DIR/pg.started-by-stack"
  fi
}

# ---------------------------------------------------------------- Redis

# PING over bash's /dev/tcp: a Redis that already answers (CI's service container) needs no
# redis-cli on this machine.
redis_ok() (
  exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 && [ "$reply" = $'+PONG\r' ]
) 2>/dev/null

redis_up() {
  if redis_ok; then return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$REDIS_DIR"
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log"
  if ! wait_for redis_ok 15; then
    tail -n 30 "$REDIS_DIR/redis.log" >&2 || true
    die "Redis did not answer PING within 15 s"
  fi
}

redis_down() {
  if [ -f "$REDIS_DIR/redis.pid" ]; then
    log "stopping Redis"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    rm -f "$REDIS_DIR/redis.pid"
  fi
}

# ---------------------------------------------------------------- commands

print_env() {
  echo "KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
  echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
}

status_line() { if $2; then echo "$1: up"; else echo "$1: down"; fi; }

case "${1:-}" in
up)
  mkdir -p "$STACK_DIR"
  # PostgreSQL and Redis first: Kafka takes longest and its wait overlaps nothing else anyway.
  command -v python3 >/dev/null || apt_install python3
  command -v pg_isready >/dev/null || apt_install postgresql
  # kcat: how the Loghub integration test (and the README) send plain-text lines to Kafka.
  command -v kcat >/dev/null || apt_install kcat
  pg_up
  redis_up
  kafka_up
  log "ready: kafka 127.0.0.1:$KAFKA_PORT, postgresql 127.0.0.1:$PG_PORT/$DB_NAME, redis 127.0.0.1:$REDIS_PORT"
  ;;
down)
  kafka_down
  redis_down
  pg_down
  ;;
status)
  status_line kafka kafka_metadata_ok
  status_line postgresql pg_ok
  status_line redis redis_ok
  ;;
env)
  print_env
  ;;
*)
  echo "usage: $0 up|down|status|env" >&2
  exit 2
  ;;
esac
