#!/usr/bin/env bash
# Proves the container image, here and in CI, without a Docker engine:
#   1. a Debian bookworm base made with mmdebstrap from Debian's own packages (cached under the
#      build dir), imported as docker.io/library/debian:bookworm-slim (the Dockerfile's base);
#   2. the image built from deploy/docker/Dockerfile with podman (niced, host network for apt);
#   3. the three services started from it on host networking, ephemeral ports, SQLite in a temp
#      volume, a redis-server on 127.0.0.1; each answers grpc.health.v1 (from the host and with
#      the continuum-probe inside the image) and one real authenticated call (continuum-seed, then
#      tests/deploy/smoke_calls.mjs with grpc-js; session-record and messaging call scheduling);
#   4. `podman stop` (SIGTERM) each: exit code 0, well before the stop timeout, drain logged.
# When containers cannot run on this machine it prints "SKIPPED: <reason>" and exits 77 (ctest
# SKIP_RETURN_CODE). It never reports success without having done all of the above.
#
# Environment: CONTINUUM_BINARY_DIR (the CMake build dir: bin/continuum-{probe,token,seed} and the
# cache of this test), CONTINUUM_SOURCE_DIR (default: this repo), CONTINUUM_NPM_MODULES
# (node_modules with @grpc/grpc-js), CONTINUUM_CT_KEEP=1 keeps the temp dir for debugging.
set -euo pipefail

src="${CONTINUUM_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
bindir="${CONTINUUM_BINARY_DIR:?set CONTINUUM_BINARY_DIR to the CMake build directory}"
node_modules="${CONTINUUM_NPM_MODULES:-$src/.cache/npm/node_modules}"
work="$bindir/container-test"          # cached between runs: base tar, image storage
image="localhost/continuum:container-test"
base_ref="docker.io/library/debian:bookworm-slim"

t_start=$SECONDS
say() { printf '[container-test %4ds] %s\n' "$((SECONDS - t_start))" "$*"; }
skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------ prerequisites
need=(podman runc mmdebstrap)
missing_tools() { local m=(); for t in "${need[@]}"; do command -v "$t" >/dev/null || m+=("$t"); done; echo "${m[*]}"; }
if [ -n "$(missing_tools)" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing podman, buildah, runc, mmdebstrap (missing: $(missing_tools))"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
       podman buildah runc fuse-overlayfs slirp4netns uidmap mmdebstrap) >"$bindir/container-test-apt.log" 2>&1 ||
      skip "apt-get install of podman/buildah/runc/mmdebstrap failed (see $bindir/container-test-apt.log)"
  fi
fi
[ -z "$(missing_tools)" ] || skip "$(missing_tools) not installed and cannot be installed here (needs root and apt-get)"
[ "$(id -u)" -eq 0 ] || skip "needs root: mmdebstrap --mode=root and rootful podman with a private storage root"
for t in redis-server node; do command -v "$t" >/dev/null || fail "$t is required (tools/dev/deps.sh installs it)"; done
for b in continuum-probe continuum-token continuum-seed; do
  [ -x "$bindir/bin/$b" ] || fail "$bindir/bin/$b is missing: build the project first"
done
[ -d "$node_modules/@grpc/grpc-js" ] || fail "$node_modules/@grpc/grpc-js is missing (tools/dev/deps.sh: continuum_install_npm_tools)"

mkdir -p "$work"
exec 9>"$work/lock"
flock -w 600 9 || fail "another container test holds $work/lock"

# Private podman configuration and storage (toolchain.md: runc, cgroupfs, host network, overlay).
tmp="$(mktemp -d /tmp/continuum-ct.XXXXXX)"
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$work/libpod-tmp"
EOF
cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/runroot"
EOF
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"

names=()
redis_pid=""
cleanup() {
  local rc=$?
  set +e
  for n in "${names[@]}"; do podman rm -f -t 0 "$n" >/dev/null 2>&1; done
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  if [ "${CONTINUUM_CT_KEEP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
  exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------------------------ 1. base image
# Like Debian's official slim images: no docs (but copyrights), man pages, locales or info
# (the dpkg options stay in the image, so packages installed later are trimmed the same way).
mmdebstrap_opts=(--variant=minbase --mode=root --format=tar
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*')
base_tar="$work/bookworm-slim-$(echo "${mmdebstrap_opts[*]}" | md5sum | cut -c1-8).tar"
t0=$SECONDS
if [ ! -s "$base_tar" ]; then
  say "mmdebstrap: building a bookworm minbase (cached at $base_tar)"
  rm -f "$work"/bookworm-*.tar
  nice -n 19 mmdebstrap "${mmdebstrap_opts[@]}" bookworm "$base_tar.tmp" \
    >"$work/mmdebstrap.log" 2>&1 || fail "mmdebstrap failed: $(tail -5 "$work/mmdebstrap.log")"
  mv "$base_tar.tmp" "$base_tar"
fi
if [ "$(cat "$work/base.imported" 2>/dev/null)" != "$base_tar" ] || ! podman image exists "$base_ref"; then
  podman import --quiet "$base_tar" "$base_ref" >/dev/null || fail "podman import of $base_tar failed"
  echo "$base_tar" >"$work/base.imported"
fi
say "base image $base_ref ready in $((SECONDS - t0)) s"

# Can this machine run a container at all? (cgroups, runtime, overlay.) If not, skip: everything
# after this point failing is a real failure.
if ! out="$(podman run --rm --network host "$base_ref" /bin/true 2>&1)"; then
  skip "podman cannot run a container here: $(echo "$out" | tail -3 | tr '\n' ' ')"
fi

# ------------------------------------------------------------------------------ 2. the image
# Build context: the work tree (default), or with CONTINUUM_CT_CONTEXT=head the committed tree
# (git archive HEAD), so edits in progress elsewhere in a shared work tree cannot break the build.
context="$src"
if [ "${CONTINUUM_CT_CONTEXT:-worktree}" = head ]; then
  context="$tmp/context"
  mkdir -p "$context"
  git -C "$src" archive HEAD | tar -x -C "$context" || fail "git archive HEAD of $src failed"
fi
t0=$SECONDS
say "podman build (nice 19; cached layers are reused): deploy/docker/Dockerfile"
if ! nice -n 19 podman build --network host --pull=never --layers -f "$src/deploy/docker/Dockerfile" \
       -t "$image" "$context" >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log" >&2
  fail "podman build failed (log: $work/build.log)"
fi
build_s=$((SECONDS - t0))
size="$(podman images --format '{{.Size}}' "$image" | head -1)"
say "image $image built in $build_s s, size $size"
# Drop week-old dangling images of earlier builds (younger ones are the layer cache of the
# build stage, which the next build reuses).
podman image prune -f --filter until=168h >/dev/null 2>&1 || true

# ------------------------------------------------------------------------------ 3. run it
ports=($(node -e '
  const net = require("net"); const n = 7; const servers = [];
  let left = n; const out = [];
  for (let i = 0; i < n; i++) { const s = net.createServer(); servers.push(s);
    s.listen(0, "127.0.0.1", () => { out.push(s.address().port); if (--left === 0) {
      console.log(out.join(" ")); servers.forEach((x) => x.close()); } }); }'))
redis_port=${ports[0]}
mkdir -p "$tmp/redis" "$tmp/secrets" "$tmp/data"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp/redis" --save "" --appendonly no \
  --logfile "$tmp/redis/redis.log" &
redis_pid=$!
(umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$tmp/secrets/hs256-secret")
# The container user (uid 10001) reads the secret and owns the data volume.
chown -R 10001:10001 "$tmp/secrets" "$tmp/data"

declare -A port metrics health
services=(scheduling session-record messaging)
port[scheduling]=${ports[1]}; metrics[scheduling]=${ports[2]}
port[session-record]=${ports[3]}; metrics[session-record]=${ports[4]}
port[messaging]=${ports[5]}; metrics[messaging]=${ports[6]}
health[scheduling]=continuum.scheduling.v1.SchedulingService
health[session-record]=continuum.records.v1.SessionRecordService
health[messaging]=continuum.messaging.v1.MessagingService
run_id="ct$$"

t0=$SECONDS
for svc in "${services[@]}"; do
  name="continuum-$svc-$run_id"
  names+=("$name")
  # No CONTINUUM_DATABASE_URL: the image's default (SQLite under /var/lib/continuum) is tested.
  podman run -d --name "$name" --network host \
    -v "$tmp/data:/var/lib/continuum" -v "$tmp/secrets:/etc/continuum/jwt:ro" \
    -e CONTINUUM_LISTEN_ADDRESS="127.0.0.1:${port[$svc]}" \
    -e CONTINUUM_METRICS_ADDRESS="127.0.0.1:${metrics[$svc]}" \
    -e CONTINUUM_REDIS_ADDRESS="127.0.0.1:$redis_port" \
    -e CONTINUUM_SCHEDULING_ADDRESS="127.0.0.1:${port[scheduling]}" \
    -e CONTINUUM_JWT_HS256_SECRET_FILE=/etc/continuum/jwt/hs256-secret \
    -e CONTINUUM_DRAIN_DEADLINE=5s \
    "$image" "$svc" >/dev/null || fail "podman run $svc failed"
done

# Wait for each service by polling its health (bounded; the container must stay up meanwhile).
for svc in "${services[@]}"; do
  name="continuum-$svc-$run_id"
  deadline=$((SECONDS + 90))
  until "$bindir/bin/continuum-probe" --timeout=1s "127.0.0.1:${port[$svc]}" health "${health[$svc]}" >/dev/null 2>&1; do
    if [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
      podman logs "$name" >&2 || true
      fail "$svc exited before serving"
    fi
    [ $SECONDS -lt $deadline ] || { podman logs "$name" >&2; fail "$svc not SERVING within 90 s"; }
    sleep 0.2
  done
  # The image's own probe (what compose healthchecks run) agrees, from inside the container.
  podman exec "$name" continuum-probe "127.0.0.1:${port[$svc]}" health "${health[$svc]}" >/dev/null ||
    fail "continuum-probe inside $name does not report SERVING"
  say "$svc SERVING on 127.0.0.1:${port[$svc]} (host probe and in-container probe)"
done
say "three containers serving $((SECONDS - t0)) s after the first podman run"
curl_metrics="$(node -e '
  require("http").get(process.argv[1], (r) => { let b = ""; r.on("data", (c) => b += c);
    r.on("end", () => console.log(r.statusCode, b.includes("grpc_server_handled_total") ? "ok" : "no-rpc-metrics")); })
    .on("error", (e) => console.log("error", e.message));' "http://127.0.0.1:${metrics[scheduling]}/metrics")"

# One real authenticated call each. continuum-seed loads the demo clinic through scheduling's
# public API (admin-level service token); then grpc-js calls each service with person tokens.
"$bindir/bin/continuum-seed" --scheduling="127.0.0.1:${port[scheduling]}" \
  --secret-file="$tmp/secrets/hs256-secret" >"$tmp/seed.out" 2>&1 ||
  { cat "$tmp/seed.out" >&2; podman logs "continuum-scheduling-$run_id" >&2; fail "continuum-seed against the scheduling container failed"; }
token() { "$bindir/bin/continuum-token" --secret-file="$tmp/secrets/hs256-secret" --subject="$1" --role="$2" --clinics=demo --ttl=10m; }
if ! CONTINUUM_NPM_MODULES="$node_modules" PROTO_ROOT="$src/protos" \
     SCHEDULING="127.0.0.1:${port[scheduling]}" SESSION_RECORD="127.0.0.1:${port[session-record]}" \
     MESSAGING="127.0.0.1:${port[messaging]}" \
     ADMIN_TOKEN="$(token demo-admin admin)" THERAPIST_TOKEN="$(token tara therapist)" \
     CLIENT_TOKEN="$(token casey client)" \
     node "$src/tests/deploy/smoke_calls.mjs" >"$tmp/calls.out" 2>&1; then
  cat "$tmp/calls.out" >&2
  for svc in "${services[@]}"; do echo "--- $svc"; podman logs "continuum-$svc-$run_id" 2>&1 | tail -20; done >&2
  fail "authenticated calls to the containers failed"
fi
sed 's/^/  /' "$tmp/calls.out"
[ "$curl_metrics" = "200 ok" ] || fail "scheduling metrics endpoint: $curl_metrics"
say "metrics http://127.0.0.1:${metrics[scheduling]}/metrics answers with grpc_server_handled_total"
for db in scheduling session_record messaging; do
  [ -s "$tmp/data/$db.db" ] || fail "no SQLite file $db.db in the data volume"
done

# ------------------------------------------------------------------------------ 4. SIGTERM
for svc in messaging session-record scheduling; do
  name="continuum-$svc-$run_id"
  t1=$SECONDS
  podman stop -t 30 "$name" >/dev/null || fail "podman stop $svc failed"
  took=$((SECONDS - t1))
  code="$(podman inspect -f '{{.State.ExitCode}}' "$name")"
  # The log goes to a file and grep reads the file (`echo "$logs" | grep -q` under pipefail can
  # fail by SIGPIPE). conmon writes the k8s-file log asynchronously, so right after `podman
  # stop` its last lines may not be there yet: the log is read again, for up to 10 s, until
  # the three shutdown lines are in it (CI once saw scheduling's exit code 0 but no
  # "received signal 15" in a log read at once).
  log="$tmp/$svc.stop.log"
  missing=""
  for _ in $(seq 1 50); do
    podman logs "$name" >"$log" 2>&1
    missing=""
    for want in "received signal 15" "shutting down, draining in-flight calls" ": stopped"; do
      grep -q -- "$want" "$log" || missing="$want"
    done
    [ -z "$missing" ] && break
    sleep 0.2
  done
  [ "$code" = 0 ] || { tail -20 "$log" >&2; fail "$svc exited with $code after SIGTERM (want 0)"; }
  [ "$took" -lt 25 ] || fail "$svc took $took s to stop (SIGTERM not handled? stop timeout is 30 s)"
  [ -z "$missing" ] || { cat "$log" >&2; fail "$svc log ($(wc -c <"$log") bytes, read for 10 s) has no '$missing'"; }
  say "$svc: SIGTERM -> drained, exit code 0 in ${took} s"
  podman rm "$name" >/dev/null
done
names=()

say "PASSED: image build ${build_s} s, image size ${size}; built, served, answered, drained"
