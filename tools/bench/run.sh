#!/usr/bin/env bash
# The performance suite, one command: builds what it needs, starts everything on 127.0.0.1
# in a temp dir (redis-server, a PostgreSQL cluster with fsync on, the echo server, the three
# services on SQLite and then on PostgreSQL), seeds data, measures, stops everything, and
# writes the report (markdown table, target verdicts, plots).
#
#   tools/bench/run.sh
#
# Environment: PERF_SECONDS (measured seconds per point, default 5), PERF_WARMUP (1),
# PERF_REPEAT_SECONDS (3: each of the three alternating runs behind a read target),
# PERF_OUT (where report.md, the PNGs and results.jsonl go; default docs/perf),
# PERF_STREAMS (10000), CONTINUUM_BUILD_DIR (build).
#
# The machine is shared: load generator and servers run on the same cores, so every ratio is
# taken against a baseline measured in the same run on the same machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${CONTINUUM_BUILD_DIR:-$root/build}"
out="${PERF_OUT:-$root/docs/perf}"
secs="${PERF_SECONDS:-5}"
warm="${PERF_WARMUP:-1}"
rsecs="${PERF_REPEAT_SECONDS:-3}"
nstreams="${PERF_STREAMS:-10000}"
bin="$build/bin"
t_begin=$SECONDS
say() { printf '== %s (%ds)\n' "$*" $((SECONDS - t_begin)) >&2; }

# ---- dependencies: the build's (tools/dev/deps.sh, as tools/up.sh and tools/test.sh), and
# what this script runs besides the build (plots via Debian's matplotlib, run with
# /usr/bin/python3, not a pyenv python).
source "$root/tools/dev/deps.sh"
continuum_install_deps python3-matplotlib

# ---- build only what runs here (the machine is shared: low priority, and one job when only a
# few files changed; a fresh checkout is configured first and built with every core).
say "building"
jobs=(-j1)
if [ ! -f "$build/build.ninja" ]; then
  say "configuring $build (a fresh checkout: the first build takes several minutes)"
  jobs=()
fi
continuum_configure "$root" "$build"  # also sets ccache's base dir, configured or not
nice ninja -C "$build" "${jobs[@]}" continuum-loadgen continuum-echo-server continuum-scheduling \
  continuum-session-record continuum-messaging >/dev/null

# ---- processes: every one started here is recorded and stopped on exit.
work="$(mktemp -d /tmp/continuum-perf-XXXXXX)"
chmod 755 "$work"
pids=()
pg_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$pg_pid" ]; then
    kill -INT "$pg_pid" 2>/dev/null || true  # fast shutdown
    wait "$pg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM

# Run copies: another build in the same tree may relink a binary while the suite uses it (or
# while we copy it: a copy that does not run is taken again).
mkdir -p "$work/bin"
for b in continuum-loadgen continuum-echo-server continuum-scheduling continuum-session-record continuum-messaging; do
  for attempt in 1 2 3 4 5 6; do
    cp "$bin/$b" "$work/bin/$b" 2>/dev/null && "$work/bin/$b" --help >/dev/null 2>&1 && break
    [ "$attempt" -lt 6 ] || { echo "cannot take a working copy of $bin/$b" >&2; exit 1; }
    sleep 5
  done
done
bin="$work/bin"

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {  # wait_for <what> <command...>: up to 60 s
  local what="$1"
  shift
  for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what did not come up; logs in $work" >&2
  tail -20 "$work"/*.log >&2 || true
  exit 1
}
stop_pid() {  # SIGTERM one process we started and forget it
  local pid="$1" keep=()
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

start_redis() {  # start_redis <name>; sets redis_port, redis_pid
  redis_port="$(free_port)"
  mkdir -p "$work/$1"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/$1" --save "" --appendonly no \
    --logfile "$work/$1.log" &
  redis_pid=$!
  pids+=("$redis_pid")
  wait_for "redis-server" redis-cli -p "$redis_port" ping
}

# A service on 127.0.0.1:0; sets svc_addr and svc_pid from its ready file.
start_service() {  # start_service <binary> <tag> <args...>
  local binary="$1" tag="$2"
  shift 2
  rm -f "$work/$tag.ready"
  "$bin/$binary" --listen-address=127.0.0.1:0 --metrics-address= --ready-file="$work/$tag.ready" \
    --jwt-hs256-secret=continuum-test-secret-0123456789abcdef "$@" >>"$work/$tag.log" 2>&1 &
  svc_pid=$!
  pids+=("$svc_pid")
  wait_for "$tag" test -s "$work/$tag.ready"
  svc_addr="$(sed -n 's/^grpc=//p' "$work/$tag.ready")"
}

# PostgreSQL as production runs it for durability (fsync and synchronous_commit on), in the
# temp dir on a free port; as the postgres user when we are root (initdb refuses root).
start_postgres() {
  local pgbin
  pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    as=(setpriv --reuid=postgres --regid=postgres --clear-groups --)
    mkdir -p "$work/pg"
    chown postgres:postgres "$work/pg"
  fi
  "${as[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$work/initdb.log" 2>&1
  pg_port="$(free_port)"
  "${as[@]}" "$pgbin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" -c listen_addresses=127.0.0.1 \
    -c fsync=on -c synchronous_commit=on -c max_connections=200 >"$work/postgres.log" 2>&1 &
  pg_pid=$!
  wait_for "postgres" pg_isready -h 127.0.0.1 -p "$pg_port"
  for db in scheduling records messaging; do
    psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE $db" postgres >/dev/null
  done
}

# ---- measurements
results="$work/results.jsonl"
: >"$results"
lg() { "$bin/continuum-loadgen" --warmup="${warm}s" --duration="${secs}s" --out="$results" "$@" >/dev/null; }
jsonl() { echo "$1" >>"$results"; }

# redis-benchmark requests/s for one command (the last "NAME: N requests per second" line).
redis_bench() {  # redis_bench <port> <label> <args...>
  local port="$1" label="$2"
  shift 2
  local rps
  rps="$(redis-benchmark -h 127.0.0.1 -p "$port" -q -n 100000 "$@" 2>/dev/null | tr '\r' '\n' |
    sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)"
  echo "redis-benchmark $label: ${rps:-?} requests/s" >&2
  jsonl "{\"scenario\":\"redis-benchmark\",\"command\":\"$label\",\"args\":\"$*\",\"qps\":${rps:-null}}"
}

# A messaging replica's synced-commit histogram (continuum_db_commit_seconds) from its metrics
# endpoint, as JSON {"<le>": cumulative count}.
commit_buckets() {  # commit_buckets <metrics port>
  /usr/bin/python3 - "$1" <<'PY'
import json, re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
buckets = {}
for m in re.finditer(r'^continuum_db_commit_seconds_bucket\{(.*)\} (\S+)$', text, re.M):
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    if labels.get("durability") == "synced":
        buckets[labels["le"]] = float(m.group(2))
print(json.dumps(buckets))
PY
}

# The binaries are built from the working tree: name what differs from the commit.
dirty="$(git -C "$root" status --porcelain --untracked-files=no -- common services protos | awk '{print $2}' | tr '\n' ' ')"
jsonl "{\"scenario\":\"environment\",\"date\":\"$(date -u +%FT%TZ)\",\"commit\":\"$(git -C "$root" rev-parse --short HEAD)\",\"uncommitted\":\"${dirty% }\",\"nproc\":$(nproc),\"loadavg_before\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"seconds\":$secs,\"warmup\":$warm}"

# Echo: the ceiling of a unary call on this machine.
say "echo server"
rm -f "$work/echo.ready"
"$bin/continuum-echo-server" --ready-file="$work/echo.ready" >"$work/echo.log" 2>&1 &
echo_pid=$!
pids+=("$echo_pid")
wait_for "echo server" test -s "$work/echo.ready"
echo_addr="$(sed -n 's/^grpc=//p' "$work/echo.ready")"
for ck in 1x1 4x4 4x32 16x100; do
  lg --scenario=echo --target="$echo_addr" --connections="${ck%x*}" --inflight="${ck#*x}"
done
echo_max="$(/usr/bin/python3 -c '
import json, sys
print(int(max(r["qps"] for r in map(json.loads, open(sys.argv[1])) if r.get("scenario") == "echo")))' "$results")"
# Open-loop rates: fractions of the echo maximum (half of it is the latency target's rate).
rates=()
for f in 0.1 0.25 0.5 0.75; do rates+=("$(/usr/bin/python3 -c "print(int($echo_max * $f))")"); done
jsonl "{\"scenario\":\"echo-max\",\"qps\":$echo_max,\"rates\":[$(IFS=,; echo "${rates[*]}")]}"
say "echo max ${echo_max}/s; open-loop rates ${rates[*]}"
# The read points' open loops start their calls from one pacing thread on a 200 us grid: one
# sleep per call cost the generator a third of its CPU at these rates (README "Performance").
pace=(--pacing-tick=200us --pacing-threads=1)
for r in "${rates[@]}"; do lg --scenario=echo --target="$echo_addr" --mode=open --rate="$r" "${pace[@]}"; done

say "postgres (fsync on)"
start_postgres

window=0
for backend in sqlite postgres; do
  say "stack on $backend"
  start_redis "redis-$backend"
  stack_redis_port="$redis_port"
  if [ "$backend" = sqlite ]; then
    url() { echo "sqlite:$work/$1.db"; }
  else
    url() { echo "postgresql://postgres@127.0.0.1:$pg_port/$1"; }
  fi
  start_service continuum-scheduling "scheduling-$backend" --database-url="$(url scheduling)" \
    --redis-address="127.0.0.1:$redis_port"
  sched_addr="$svc_addr"
  sched_pid="$svc_pid"
  start_service continuum-session-record "records-$backend" --database-url="$(url records)" \
    --redis-address="127.0.0.1:$redis_port" --scheduling-address="$sched_addr"
  rec_addr="$svc_addr"
  rec_pid="$svc_pid"
  # Messaging serves metrics: its commit-latency histogram is read around the delivery runs.
  start_service continuum-messaging "messaging-$backend" --database-url="$(url messaging)" \
    --redis-address="127.0.0.1:$redis_port" --scheduling-address="$sched_addr" --metrics-address=127.0.0.1:0
  msg_addr="$svc_addr"
  msg_pid="$svc_pid"
  msg_metrics="$(sed -n 's/^metrics=//p' "$work/messaging-$backend.ready")"
  state="$work/state-$backend"
  say "seeding ($backend)"
  "$bin/continuum-loadgen" --scenario=setup --scheduling="$sched_addr" --records="$rec_addr" \
    --messaging="$msg_addr" --state="$state"

  say "reads ($backend)"
  ga() { lg --scenario=get-appointment --label="$backend" --state="$state" --target="$sched_addr" "$@"; }
  for ck in 1x1 4x4; do ga --connections="${ck%x*}" --inflight="${ck#*x}"; done
  # The target points three times each, alternating with their echo baseline (the report takes
  # medians): the machine's other load drifts, and a ratio is fairest between neighbours.
  for _ in 1 2 3; do
    lg --scenario=echo --label="echo-$backend" --target="$echo_addr" --connections=4 --inflight=32 \
      --duration="${rsecs}s"
    ga --connections=4 --inflight=32 --duration="${rsecs}s"
    ga --connections=16 --inflight=100 --duration="${rsecs}s"
  done
  ga --mode=open --rate="${rates[0]}" "${pace[@]}"
  # A quarter of the echo maximum, next to an echo run at that rate: the report's supplement
  # compares these two (the echo runs at the start can be minutes and a host load apart).
  lg --scenario=echo --label="echo-$backend" --target="$echo_addr" --mode=open --rate="${rates[1]}" "${pace[@]}"
  ga --mode=open --rate="${rates[1]}" "${pace[@]}"
  for _ in 1 2 3; do
    lg --scenario=echo --label="echo-$backend" --target="$echo_addr" --mode=open --rate="${rates[2]}" \
      --duration="${rsecs}s" "${pace[@]}"
    ga --mode=open --rate="${rates[2]}" --duration="${rsecs}s" "${pace[@]}"
  done
  ga --mode=open --rate="${rates[3]}" "${pace[@]}"
  # The same reads on a second replica (same database and Redis) with its appointment cache
  # off: every call a read transaction on the executor, what a cache miss costs.
  start_service continuum-scheduling "scheduling-$backend-uncached" --database-url="$(url scheduling)" \
    --redis-address="127.0.0.1:$redis_port" --appointment-cache-ttl=0s
  for _ in 1 2; do
    lg --scenario=get-appointment --label="$backend-uncached" --state="$state" --target="$svc_addr" \
      --connections=4 --inflight=32 --duration="${rsecs}s"
  done
  stop_pid "$svc_pid"
  lg --scenario=search-slots --label="$backend" --state="$state" --target="$sched_addr" --connections=4 --inflight=32

  say "writes ($backend)"
  lg --scenario=book --label="$backend" --state="$state" --target="$sched_addr" --connections=4 --inflight=32 \
    --book-window=$((window++))
  # Each record takes at most 40 entries, then writes move to fresh ones (see the scenario):
  # the 1x1 run starts at record 0, the three 4x32 runs at 384, 1,152 and 1,920 of the 2,816
  # seeded records, so no run writes to a record another one wrote.
  # The baseline inserts go to a table of their own in session-record's database (idle while
  # they run): same file system, same journal state (a fresh SQLite WAL still growing costs
  # more per fsync than one that has wrapped), same durability settings through common/db.
  # The target point (4x32 against 4 threads) runs three times, alternating with its baseline;
  # the report takes medians.
  rw() {
    lg --scenario=record-write --label="$backend" --state="$state" --target="$rec_addr" --payload-bytes=120 \
      --entries-per-record=40 "$@"
  }
  bare() { lg --scenario=bare-insert --label="$backend" --database-url="$(url records)" --payload-bytes=120 "$@"; }
  rw --connections=1 --inflight=1 --record-offset=0
  bare --threads=1
  for offset in 384 1152 1920; do
    bare --threads=4
    rw --connections=4 --inflight=32 --record-offset="$offset"
  done

  say "messaging ($backend)"
  if [ "$backend" = sqlite ]; then
    # Redis-only paths, next to redis-benchmark on the same redis-server. The target point
    # (streamed heartbeats against ZADD) runs three times, alternating with its baseline (the
    # report takes medians): one ZADD figure from a quiet moment against heartbeats measured
    # in a busy one (or the reverse) said more about the host than about the code.
    lg --scenario=heartbeat --label=redis --target="$msg_addr" --connections=4 --inflight=32
    for _ in 1 2 3; do
      redis_bench "$stack_redis_port" ZADD -t zadd
      lg --scenario=heartbeat-stream --label=redis --target="$msg_addr" --connections=4 --inflight=32
    done
    redis_bench "$stack_redis_port" PUBLISH PUBLISH bench hello
    redis_bench "$stack_redis_port" XADD XADD bench '*' f v
    "$bin/continuum-loadgen" --scenario=streams --label=redis --target="$msg_addr" --streams="$nstreams" \
      --connections=8 --server-pid="$msg_pid" --out="$results" >/dev/null
  fi
  # Last on this stack: a delivery backlog left behind must not disturb another measurement.
  # Messages go round robin to 16 clients' conversations (each client's stream live); then all
  # into one conversation, the hot-row case. The target point (1,000/s) runs three times (the
  # report takes the median delivery p99), each with the messaging replica's commit latencies
  # over the run: a send is acknowledged, and delivered, only once its commit is durable, so
  # a stalled fsync on this shared disk is a stalled delivery.
  lg --scenario=deliver --label="$backend" --state="$state" --target="$msg_addr" --mode=open --rate=100
  for _ in 1 2 3; do
    before="$(commit_buckets "$msg_metrics")"
    lg --scenario=deliver --label="$backend" --state="$state" --target="$msg_addr" --mode=open --rate=1000
    jsonl "{\"scenario\":\"commit-latency\",\"label\":\"$backend\",\"rate\":1000,\"conversations\":16,\"before\":$before,\"after\":$(commit_buckets "$msg_metrics")}"
  done
  lg --scenario=deliver --label="$backend" --state="$state" --target="$msg_addr" --mode=open --rate=1000 \
    --conversations=1
  for pid in "$msg_pid" "$rec_pid" "$sched_pid" "$redis_pid"; do stop_pid "$pid"; done
done

jsonl "{\"scenario\":\"environment-end\",\"loadavg_after\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"seconds_total\":$((SECONDS - t_begin))}"
say "report"
mkdir -p "$out"
cp "$results" "$out/results.jsonl"
/usr/bin/python3 "$root/tools/bench/report.py" "$out/results.jsonl" "$out"
say "done: $out/report.md"
