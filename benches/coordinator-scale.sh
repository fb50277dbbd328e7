#!/usr/bin/env bash
# The coordinator past one machine, measured (book: "Run the coordinator at scale"):
# coordinator-load against 1 and 3 instances on one PostgreSQL and one Mosquitto, and against
# 1 instance on SQLite with the same Mosquitto, in one run. Starts its own PostgreSQL
# (initdb + pg_ctl, as `nobody` when run as root) and Mosquitto on free ports under a temp
# directory, and stops both at the end.
#
#   benches/coordinator-scale.sh [NODES] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-2000}
CONC=${2:-100}
# PLUTO_BENCH_BIN=DIR: binaries already built there (else a release build, here)
BIN=${PLUTO_BENCH_BIN:-target/release}
[ -n "${PLUTO_BENCH_BIN:-}" ] || cargo build --release -p pluto-coordinator --bins >&2
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL missing: run scripts/test-deps" >&2; exit 1; }
T=$(mktemp -d /tmp/pluto-scale.XXXXXX)
AS=()
if [ "$(id -u)" = 0 ]; then chown nobody: "$T"; AS=(runuser -u nobody --); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port); MQPORT=$(free_port)
MOSQ_PID=
cleanup() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$T/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
"${AS[@]}" "$PGBIN/initdb" -D "$T/pg" -U pluto --auth=trust -E UTF8 >/dev/null
# a plain durable configuration (fsync on), sized for a small machine
"${AS[@]}" "$PGBIN/pg_ctl" -D "$T/pg" -l "$T/pg.log" -w -o "-p $PGPORT -k $T -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_connections=50" start >/dev/null
export PLUTO_BROKER_PASSWORD=bench-admin
mosquitto_ctrl dynsec init "$T/dynsec.json" pluto-coordinator "$PLUTO_BROKER_PASSWORD" >/dev/null
printf 'user pluto-coordinator\ntopic readwrite pluto/v1/#\n\nuser pluto-enroll\ntopic write pluto/v1/enroll\n\npattern read pluto/v1/node/%%u/#\npattern write pluto/v1/coord/%%u/#\n' > "$T/acl"
PLUGIN=$( (ls /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so 2>/dev/null || true) | head -1)
printf 'per_listener_settings false\nallow_anonymous false\npersistence false\nmax_keepalive 300\nlistener %s 127.0.0.1\nplugin %s\nplugin_opt_config_file %s\nacl_file %s\n' \
  "$MQPORT" "$PLUGIN" "$T/dynsec.json" "$T/acl" > "$T/mosquitto.conf"
chmod -R a+rwX "$T" 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
mosquitto -c "$T/mosquitto.conf" 2>"$T/mosquitto.log" & MOSQ_PID=$!
sleep 1
run() { echo "== $1"; shift; "$BIN/coordinator-load" --nodes "$NODES" --concurrency "$CONC" --broker "mqtt://127.0.0.1:$MQPORT" "$@"; }
createdb() { "${AS[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U pluto "$1"; }
run "SQLite, 1 instance, Mosquitto"
createdb one
run "PostgreSQL, 1 instance, Mosquitto" --database "postgres://pluto@127.0.0.1:$PGPORT/one"
createdb three
run "PostgreSQL, 3 instances, Mosquitto" --database "postgres://pluto@127.0.0.1:$PGPORT/three" --instances 3
