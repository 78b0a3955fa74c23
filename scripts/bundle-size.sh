#!/usr/bin/env bash
# What a browser downloads before a page is live (issues 11 and 22): the release bundle's
# WebAssembly and JavaScript, raw, as the brotli copy the server sends, and gzipped (gzip -9).
# With islands every page (`/`, an order's, `/my-orders`) loads this one bundle, so it is each
# page's weight. Fails when the brotli total is over the budget (BUNDLE_BUDGET, bytes): a size
# check read from the release build, not a timed one. It runs in `make bench` rather than
# `make test` because only a release build (several minutes more of CI) gives the real size.
# Run after `cargo leptos build --release --precompress` (make bench does).
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=target/site/pkg
total_raw=0 total_br=0 total_gz=0
printf '%-6s %10s %10s %10s\n' file raw brotli gzip
for ext in wasm js; do
    file=$(ls "$pkg"/*."$ext" 2>/dev/null | head -n 1)
    [ -n "$file" ] || { echo "no .$ext in $pkg: build the release bundle first" >&2; exit 1; }
    raw=$(stat -c %s "$file")
    [ -f "$file.br" ] || { echo "no $file.br: build with --precompress" >&2; exit 1; }
    br=$(stat -c %s "$file.br")
    gz=$(gzip -9 -c "$file" | wc -c)
    printf '%-6s %10d %10d %10d\n' "$ext" "$raw" "$br" "$gz"
    total_raw=$((total_raw + raw)) total_br=$((total_br + br)) total_gz=$((total_gz + gz))
done
# Issue 22's target: what a phone downloads before a page is live, at most 100 KB brotli.
budget=${BUNDLE_BUDGET:-100000}
printf '%-6s %10d %10d %10d  (budget: brotli <= %d)\n' total "$total_raw" "$total_br" "$total_gz" "$budget"
if [ "$total_br" -gt "$budget" ]; then
    echo "the bundle is $total_br bytes brotli, over its budget of $budget" >&2
    exit 1
fi
