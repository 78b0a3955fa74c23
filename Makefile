# The two commands of the README:
#   make run    serve the app on http://127.0.0.1:3000 (embedded SQLite in data/)
#   make test   run every test: Rust (unit + HTTP-level) and Playwright in Chromium
# Each installs whatever is missing first (scripts/setup.sh), so a fresh machine needs nothing else.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(CURDIR)/.tools/node_modules/.bin:$(PATH)
# cargo-leptos builds debug binaries with `--cfg erase_components`; the Rust tests use the
# same flags (and the bundle name leptos reads at compile time) so both share one warm
# target/ instead of rebuilding each other's dependencies.
TEST_RUSTFLAGS := --cfg erase_components
export LEPTOS_OUTPUT_NAME := order-tracking

.PHONY: run dev test test-rust test-e2e api-check build release lint fmt setup clean publish-cost bench bench-smoke cluster chaos lighthouse

run: setup
	cargo leptos serve

dev: setup
	cargo leptos watch

setup:
	scripts/setup.sh build

build: setup
	cargo leptos build

test:
	scripts/setup.sh test
	$(MAKE) --no-print-directory test-rust
	$(MAKE) --no-print-directory test-e2e
	$(MAKE) --no-print-directory api-check
	$(MAKE) --no-print-directory bench-smoke
	$(MAKE) --no-print-directory chaos DURATION=30 SEED=20261202 CHAOS_CHART=target/chaos-smoke.svg

# Inside a throw-away Postgres cluster (Debian's pg_virtualenv; works as root): the store and
# cluster tests run on it as well as on SQLite. Redis servers are started by the tests.
test-rust:
	RUSTFLAGS="$(TEST_RUSTFLAGS)" pg_virtualenv -t cargo test --features ssr

test-e2e:
	cargo leptos build
	cd end2end && npx playwright test

# The OpenAPI document through openapi-spec-validator, then schemathesis against a live
# server with the token (scripts/api-check.sh).
api-check:
	cargo leptos build
	scripts/api-check.sh target/debug/order-tracking

# --precompress: brotli and gzip copies of the bundle beside it, served to browsers that accept them.
release:
	scripts/setup.sh release
	cargo leptos build --release --precompress

lint:
	cargo fmt --all -- --check
	cd bench && cargo fmt -- --check
	RUSTFLAGS="$(TEST_RUSTFLAGS)" cargo clippy --all-targets --features ssr -- -D warnings
	cargo clippy --lib --features hydrate --target wasm32-unknown-unknown -- -D warnings
	cd bench && CARGO_TARGET_DIR=../target/bench cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf .tools end2end/node_modules end2end/test-results

# Several instances on this machine: a throw-away Postgres, Redis, two instances and nginx
# on http://127.0.0.1:3000 (scripts/cluster.sh). Ctrl-C stops it all.
cluster: build
	scripts/setup.sh test
	scripts/cluster.sh

# The fan-out benchmark against Nchan (bench/): the release bundle's size (failing over its
# budget) and the time to "Live" on a slow phone (end2end/bench/), the release server,
# the full scenarios, the table printed and appended to BENCHMARKS.md; then (5), one instance against two on a
# throw-away Postgres with Redis, and (7), 100,000 subscribers on six instances against Nchan's six
# workers. Takes a few minutes; not part of `make test`.
BENCH := target/bench/release/sse-bench
$(BENCH): bench/Cargo.toml bench/src/*.rs bench/src/*/*.rs
	cd bench && CARGO_TARGET_DIR=../target/bench cargo build --release

bench: $(BENCH)
	scripts/setup.sh release
	scripts/setup.sh test
	cargo leptos build --release --precompress
	scripts/bundle-size.sh
	node end2end/bench/time-to-live.mjs target/release/order-tracking
	pg_virtualenv -t $(BENCH) --server target/release/order-tracking --markdown BENCHMARKS.md

# The same benchmark in miniature (200 subscribers, debug server), so it never rots; it
# fails on any loss. Part of `make test`.
bench-smoke: $(BENCH)
	cargo leptos build
	pg_virtualenv -t $(BENCH) --smoke --server target/debug/order-tracking

# Random faults over three instances on Postgres and Redis behind nginx (scripts/cluster.sh),
# a few hundred customers and retrying publishers, then a checker that compares every
# customer's history with the store (bench/src/chaos/). DURATION in seconds; SEED repeats a
# run (a random one is printed otherwise); PEER=nchan puts two nginx + Nchan on Redis under
# the same seed's Redis faults; CHAOS_SERVER another build (a release one for the figures of
# BENCHMARKS.md). `make test` runs 30 s of it with a fixed seed.
DURATION ?= 300
PEER ?= ours
CHAOS_SERVER ?= target/debug/order-tracking
CHAOS_CHART ?= docs/chaos-$(PEER).svg
chaos: $(BENCH)
	scripts/setup.sh test
	cargo leptos build
	$(BENCH) --chaos --peer $(PEER) --duration $(DURATION) $(if $(SEED),--seed $(SEED)) --server $(CHAOS_SERVER) --chart $(CHAOS_CHART)

# The pages as Lighthouse sees them (default mobile settings), on the release build: prints
# Performance and Accessibility of `/` and an order's page and appends them to BENCHMARKS.md.
lighthouse:
	scripts/setup.sh lighthouse
	cargo leptos build --release --precompress
	scripts/lighthouse.sh

# What a durable publish costs: on SQLite synchronous=FULL against NORMAL; on Postgres (a
# throw-away one) ids in commit order against no ordering; each side by side.
publish-cost:
	scripts/setup.sh test
	pg_virtualenv -t cargo run --release --example publish_cost --features ssr
