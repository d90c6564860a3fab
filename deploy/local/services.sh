#!/usr/bin/env bash
# Real Apache Kafka (KRaft, single node) and PostgreSQL on 127.0.0.1, without
# Docker. Used by `make services`, `make test`, `make demo` and CI.
#
#   deploy/local/services.sh start | stop | status | env
#
# Settings (environment):
#   LLMPULSE_HOME                  state + logs (default: <repo>/.local)
#   LLMPULSE_KAFKA_PORT            broker port (default 19092)
#   LLMPULSE_KAFKA_CONTROLLER_PORT KRaft controller port (default 19093)
#   LLMPULSE_PG_PORT               PostgreSQL port (default 15432)
#   LLMPULSE_CACHE                 jar cache (default ~/.cache/llmpulse)
#   LLMPULSE_KAFKA_HEAP            broker heap (default 512m)
#
# Every step is idempotent: `start` twice leaves one broker and one server.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
home=${LLMPULSE_HOME:-$repo/.local}
logs=$home/logs
kafka_port=${LLMPULSE_KAFKA_PORT:-19092}
controller_port=${LLMPULSE_KAFKA_CONTROLLER_PORT:-19093}
pg_port=${LLMPULSE_PG_PORT:-15432}
cache=${LLMPULSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmpulse}
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
kafka_libs=$cache/kafka-$kafka_version/libs
kafka_dir=$home/kafka-$kafka_port
kafka_pid=$kafka_dir/kafka.pid

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq 1 $((seconds * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  return 1
}

# ---------------------------------------------------------------- Kafka ----

kafka_jars() {
  # The jars are resolved once from Maven Central and cached outside the repo,
  # so a fresh clone (CI) on the same machine starts without any network.
  if [ -f "$kafka_libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven is needed once to fetch the Kafka $kafka_version jars (apt-get install maven)"
  say "resolving Apache Kafka $kafka_version from Maven Central (once; cached in $kafka_libs)"
  rm -rf "$kafka_libs"; mkdir -p "$kafka_libs" "$logs"
  if ! mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$kafka_libs" >"$logs/maven.log" 2>&1; then
    die "could not resolve the Kafka jars; see $logs/maven.log"
  fi
  touch "$kafka_libs/.complete"
}

kafka_running() { [ -f "$kafka_pid" ] && kill -0 "$(cat "$kafka_pid")" 2>/dev/null; }

kafka_answers() {
  # A metadata round trip, not just an open port: the port opens before the
  # broker has joined its own KRaft quorum.
  kcat -b "127.0.0.1:$kafka_port" -L -m 3 2>/dev/null | grep -q "1 brokers"
}

kafka_start() {
  if kafka_running; then
    wait_for 60 kafka kafka_answers || die "Kafka (pid $(cat "$kafka_pid")) runs but does not answer; see $logs/kafka.log"
    say "Kafka already running on 127.0.0.1:$kafka_port"; return 0
  fi
  port_open "$kafka_port" && die "port $kafka_port is taken by another process; set LLMPULSE_KAFKA_PORT"
  command -v java >/dev/null || die "Java 17+ is needed for the Kafka broker (apt-get install default-jre-headless)"
  kafka_jars
  mkdir -p "$kafka_dir/data" "$logs"
  sed -e "s:@KAFKA_PORT@:$kafka_port:g" -e "s:@CONTROLLER_PORT@:$controller_port:g" \
      -e "s:@DATA_DIR@:$kafka_dir/data:g" "$here/server.properties.in" >"$kafka_dir/server.properties"
  local cp="$kafka_libs/*"
  if [ ! -f "$kafka_dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    java -Dlog4j2.configurationFile="$here/log4j2.yaml" -cp "$cp" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$kafka_dir/server.properties" --ignore-formatted >>"$logs/kafka.log" 2>&1 \
      || die "formatting the KRaft log dir failed; see $logs/kafka.log"
  fi
  say "starting Apache Kafka $kafka_version on 127.0.0.1:$kafka_port (log: $logs/kafka.log)"
  nohup java -Xms256m -Xmx"${LLMPULSE_KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.yaml" -cp "$cp" kafka.Kafka "$kafka_dir/server.properties" \
    >>"$logs/kafka.log" 2>&1 </dev/null &
  echo $! >"$kafka_pid"
  wait_for 90 kafka kafka_answers || die "Kafka did not answer within 90 s; see $logs/kafka.log"
  say "Kafka is up"
}

kafka_stop() {
  if ! kafka_running; then say "Kafka not running"; rm -f "$kafka_pid"; return 0; fi
  local pid; pid=$(cat "$kafka_pid")
  kill "$pid"
  # A controlled shutdown flushes logs; give it time before forcing.
  wait_for 30 kafka-stop bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
  rm -f "$kafka_pid"; say "Kafka stopped"
}

# ----------------------------------------------------------- PostgreSQL ----

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && bin=$d; done
  [ -n "${bin:-}" ] || die "PostgreSQL server binaries not found (make system-deps installs Debian's postgresql)"
  echo "$bin"
}

# Postgres refuses to run as root; as root we run it as the `postgres` user the
# Debian package creates, in a folder that user can reach.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_dir() {
  local dir=$home/postgres-$pg_port
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$dir"; chown postgres "$dir"
    if ! runuser -u postgres -- test -w "$dir"; then
      dir=/tmp/llmpulse-postgres-$pg_port
      mkdir -p "$dir"; chown postgres "$dir"
    fi
  else
    mkdir -p "$dir"
  fi
  echo "$dir"
}

pg_start() {
  local bin dir; bin=$(pg_bin); dir=$(pg_dir)
  mkdir -p "$logs"; touch "$logs/postgres.log"
  [ "$(id -u)" = 0 ] && chown postgres "$logs/postgres.log"
  if as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    say "PostgreSQL already running on 127.0.0.1:$pg_port"
  else
    port_open "$pg_port" && die "port $pg_port is taken by another process; set LLMPULSE_PG_PORT"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      # trust on loopback only: a throwaway development server, never exposed.
      as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-instructions >>"$logs/postgres.log" 2>&1 \
        || die "initdb failed; see $logs/postgres.log"
    fi
    say "starting PostgreSQL $(basename "$(dirname "$bin")") on 127.0.0.1:$pg_port (log: $logs/postgres.log)"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$logs/postgres.log" -w -t 60 \
      -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $dir -c max_connections=200 -c fsync=off" start >/dev/null \
      || die "PostgreSQL did not start; see $logs/postgres.log"
  fi
  wait_for 60 postgres "$bin/pg_isready" -h 127.0.0.1 -p "$pg_port" || die "PostgreSQL does not answer; see $logs/postgres.log"
  # The project's role and database; superuser so tests can create databases
  # and a TimescaleDB-enabled server could CREATE EXTENSION.
  local psql=("$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
  "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='llmpulse'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE ROLE llmpulse LOGIN SUPERUSER"
  "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname='llmpulse'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE DATABASE llmpulse OWNER llmpulse"
  say "PostgreSQL is up"
}

pg_stop() {
  local bin dir; bin=$(pg_bin); dir=$(pg_dir)
  if as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null; say "PostgreSQL stopped"
  else
    say "PostgreSQL not running"
  fi
}

# ------------------------------------------------------------------ main ----

print_env() {
  echo "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$kafka_port"
  echo "export DATABASE_URL=postgresql://llmpulse@127.0.0.1:$pg_port/llmpulse"
}

case "${1:-}" in
  start) kafka_start; pg_start; say "logs in $logs"; print_env | sed 's/^/services: /' ;;
  stop) kafka_stop; pg_stop ;;
  restart) kafka_stop; pg_stop; kafka_start; pg_start ;;
  status)
    if kafka_running && kafka_answers; then say "Kafka: up on 127.0.0.1:$kafka_port"; else say "Kafka: down"; fi
    if "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then say "PostgreSQL: up on 127.0.0.1:$pg_port"; else say "PostgreSQL: down"; fi ;;
  env) print_env ;;
  pg-stop) pg_stop ;;
  pg-start) pg_start ;;
  *) echo "usage: $0 start|stop|restart|status|env|pg-start|pg-stop" >&2; exit 2 ;;
esac
