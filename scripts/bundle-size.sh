#!/usr/bin/env bash
# What a browser downloads before an order's page is live (issue 11, item 6): the release
# bundle's WebAssembly and JavaScript, raw, as the brotli copy the server sends, and gzipped
# (gzip -9), with the total against the target of 200 KB gzipped. Run after
# `cargo leptos build --release --precompress` (make bench does).
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=target/site/pkg
total_raw=0 total_br=0 total_gz=0
printf '%-6s %10s %10s %10s\n' file raw brotli gzip
for ext in wasm js; do
    file=$(ls "$pkg"/*."$ext" 2>/dev/null | head -n 1)
    [ -n "$file" ] || { echo "no .$ext in $pkg: build the release bundle first" >&2; exit 1; }
    raw=$(stat -c %s "$file")
    br=$(stat -c %s "$file.br" 2>/dev/null || echo 0)
    gz=$(gzip -9 -c "$file" | wc -c)
    printf '%-6s %10d %10d %10d\n' "$ext" "$raw" "$br" "$gz"
    total_raw=$((total_raw + raw)) total_br=$((total_br + br)) total_gz=$((total_gz + gz))
done
printf '%-6s %10d %10d %10d  (target: gzip <= 200000)\n' total "$total_raw" "$total_br" "$total_gz"
