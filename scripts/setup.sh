#!/usr/bin/env bash
# Installs what building, running and testing need, and only what is missing.
# Every source is one these machines reach: crates.io, npm, Debian; nothing is downloaded
# from anywhere else (cargo-leptos would fetch wasm-bindgen, wasm-opt and sass from GitHub
# unless they are on PATH, so they are installed here first).
#   scripts/setup.sh build    Rust wasm target, cargo-leptos, wasm-bindgen CLI
#   scripts/setup.sh release  build + wasm-opt (npm binaryen) for release builds
#   scripts/setup.sh test     build + Debian's Chromium + the end2end npm packages
#   scripts/setup.sh lighthouse  release + Debian's Chromium + npm's Lighthouse
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10
BINARYEN_VERSION=132
LIGHTHOUSE_VERSION=12.8.2
SCHEMATHESIS_VERSION=4.32.5
SPEC_VALIDATOR_VERSION=0.9.0
what=${1:-build}

say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup_build() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  fi
  if ! cargo leptos --version 2>/dev/null | grep -q " $CARGO_LEPTOS_VERSION\$"; then
    say "cargo install cargo-leptos $CARGO_LEPTOS_VERSION (about 11 minutes, once)"
    cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
  fi
  # The CLI must match the wasm-bindgen crate in Cargo.lock exactly.
  local wasm_bindgen
  wasm_bindgen=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $wasm_bindgen\$"; then
    say "cargo install wasm-bindgen-cli $wasm_bindgen"
    # Not --locked: its lockfile pins a crate the registry no longer serves.
    cargo install wasm-bindgen-cli --version "$wasm_bindgen" --force
  fi
}

setup_release() {
  if ! [ -x .tools/node_modules/.bin/wasm-opt ]; then
    say "npm install binaryen@$BINARYEN_VERSION (wasm-opt; Debian's is too old)"
    mkdir -p .tools
    npm install --prefix .tools --no-audit --no-fund --silent "binaryen@$BINARYEN_VERSION"
  fi
}

setup_test() {
  # Chromium for Playwright; nginx for the reverse-proxy test (tests/proxy.rs); Nchan, the
  # benchmark's peer (bench/); Postgres (with pg_virtualenv) and Redis for several instances.
  apt_install chromium nginx libnginx-mod-nchan postgresql redis-server curl openssl
  # The OpenAPI document's checkers (scripts/api-check.sh), from PyPI, in a virtual
  # environment of their own.
  apt_install python3-venv
  if ! .tools/venv/bin/schemathesis --version 2>/dev/null | grep -q " $SCHEMATHESIS_VERSION\$" \
    || ! [ -x .tools/venv/bin/openapi-spec-validator ]; then
    say "pip install schemathesis $SCHEMATHESIS_VERSION, openapi-spec-validator $SPEC_VALIDATOR_VERSION"
    mkdir -p .tools
    /usr/bin/python3 -m venv .tools/venv
    .tools/venv/bin/pip install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$SPEC_VALIDATOR_VERSION"
  fi
  if ! [ -d end2end/node_modules/@playwright/test ]; then
    say "npm ci in end2end/ (Playwright without its browser download)"
    (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
  fi
}

setup_lighthouse() {
  apt_install chromium curl
  if ! [ -x .tools/node_modules/.bin/lighthouse ]; then
    say "npm install lighthouse@$LIGHTHOUSE_VERSION"
    mkdir -p .tools
    npm install --prefix .tools --no-audit --no-fund --silent "lighthouse@$LIGHTHOUSE_VERSION"
  fi
}

case "$what" in
  build) setup_build ;;
  release) setup_build; setup_release ;;
  test) setup_build; setup_test ;;
  lighthouse) setup_build; setup_release; setup_lighthouse ;;
  *) echo "usage: $0 build|release|test|lighthouse" >&2; exit 2 ;;
esac
