#!/usr/bin/env bash
# Brings the whole platform up locally: installs what is missing, builds, starts a
# redis-server and the three services on SQLite files under .data/, prints their addresses
# demo data (clinic "demo") with a token per demo person, and stops everything cleanly on Ctrl-C.
#   CONTINUUM_DATA_DIR (default .data), CONTINUUM_REDIS_PORT (6390),
#   CONTINUUM_BASE_PORT (7001: scheduling, +1 session-record, +2 messaging; metrics at +2100)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${CONTINUUM_BUILD_DIR:-$root/build}"
data="${CONTINUUM_DATA_DIR:-$root/.data}"
redis_port="${CONTINUUM_REDIS_PORT:-6390}"
base="${CONTINUUM_BASE_PORT:-7001}"
source "$root/tools/dev/deps.sh"

continuum_install_deps
continuum_configure_and_build "$root" "$build" >/dev/null
bin="$build/bin"
mkdir -p "$data"
[ -s "$data/jwt-secret" ] || (umask 077; openssl rand -hex 32 > "$data/jwt-secret")

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped."
}
trap stop INT TERM EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$data" --appendonly yes \
  --appendfsync everysec --save "" --logfile "$data/redis.log" &
pids+=($!)

i=0
for svc in scheduling session-record messaging; do
  port=$((base + i)); mport=$((base + 2100 + i)); i=$((i + 1))
  rm -f "$data/$svc.ready"
  "$bin/continuum-$svc" \
    --listen-address="127.0.0.1:$port" --metrics-address="127.0.0.1:$mport" \
    --database-url="sqlite:$data/$svc.db" --redis-address="127.0.0.1:$redis_port" \
    --jwt-hs256-secret-file="$data/jwt-secret" --ready-file="$data/$svc.ready" \
    $([ "$svc" = scheduling ] || echo "--scheduling-address=127.0.0.1:$base") \
    2>>"$data/$svc.log" &
  pids+=($!)
done

for svc in scheduling session-record messaging; do
  for _ in $(seq 1 100); do [ -f "$data/$svc.ready" ] && break; sleep 0.1; done
  [ -f "$data/$svc.ready" ] || { echo "$svc did not start; see $data/$svc.log"; exit 1; }
done

seed="$("$bin/continuum-seed" --scheduling="127.0.0.1:$base" --secret-file="$data/jwt-secret")" || {
  echo "loading demo data failed; see $data/scheduling.log"; exit 1; }
cat <<MSG

Continuum is up (data in $data, logs in $data/*.log):
  scheduling      127.0.0.1:$base      metrics http://127.0.0.1:$((base + 2100))/metrics
  session-record  127.0.0.1:$((base + 1))      metrics http://127.0.0.1:$((base + 2101))/metrics
  messaging       127.0.0.1:$((base + 2))      metrics http://127.0.0.1:$((base + 2102))/metrics
  redis           127.0.0.1:$redis_port

$seed
More tokens: $bin/continuum-token --secret-file=$data/jwt-secret --subject=ID --role=ROLE --clinics=demo
Health:      $bin/continuum-probe 127.0.0.1:$base health

Press Ctrl-C to stop.
MSG
wait
