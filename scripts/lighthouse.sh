#!/usr/bin/env bash
# `make lighthouse`: the pages as Lighthouse sees them. Starts the release server (built by
# `make release`: hashed, precompressed bundle) on a free port with a throw-away database,
# places an order and delivers it, runs npm's Lighthouse (its default mobile settings:
# simulated slow 4G and a 4x slower CPU) in Debian's Chromium on `/`, on the order's page and
# on `/my-orders`, prints Performance and Accessibility with the paint timings and the element
# Lighthouse took for the largest paint, and appends them to BENCHMARKS.md. Targets (issues
# 11 and 22): Performance >= 95, Accessibility 100, LCP <= 1.5 s, TBT <= 50 ms.
#   LIGHTHOUSE_OUT   where to append (default BENCHMARKS.md; empty: print only)
#   LIGHTHOUSE_KEEP  keep the last page's full JSON report at this path
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
lighthouse=$root/.tools/node_modules/.bin/lighthouse
binary=$root/target/release/order-tracking
out=${LIGHTHOUSE_OUT-BENCHMARKS.md}
[ -x "$binary" ] || { echo "no release server: run 'make release' first" >&2; exit 1; }

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
LEPTOS_SITE_ADDR=127.0.0.1:$port LEPTOS_SITE_ROOT=$root/target/site LEPTOS_OUTPUT_NAME=order-tracking \
  DATABASE_URL="sqlite://$dir/orders.db" RUST_LOG=warn "$binary" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

order=$(curl -sf -X POST "$base/api/orders" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -sf -X POST "$base/orders/$order/simulate?interval_ms=0&wait=true" >/dev/null

rows=()
for page in "/" "/orders/$order" "/my-orders"; do
  CHROME_PATH=/usr/bin/chromium "$lighthouse" "$base$page" --quiet \
    --only-categories=performance,accessibility \
    --chrome-flags="--headless=new --no-sandbox --disable-gpu" \
    --output=json --output-path="$dir/report.json" >/dev/null 2>&1
  name=$page
  [ "$page" = "/orders/$order" ] && name="/orders/{id}"
  cp "$dir/report.json" "${LIGHTHOUSE_KEEP:-/dev/null}" 2>/dev/null || true
  rows+=("$(python3 - "$dir/report.json" "$name" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
scores = {k: round(v["score"] * 100) for k, v in report["categories"].items()}
audits = report["audits"]
timing = lambda key: audits[key]["displayValue"].replace("\u00a0", " ")
lcp = audits.get("largest-contentful-paint-element", {}).get("details", {}).get("items", [])
try:
    element = lcp[0]["items"][0]["node"]["selector"].split(" > ")[-1]
except (IndexError, KeyError, TypeError):
    element = "?"
failing = [ref["id"] for ref in report["categories"]["accessibility"]["auditRefs"]
           if audits[ref["id"]].get("score") not in (None, 1)]
print(f"| `{sys.argv[2]}` | {scores['performance']} | {scores['accessibility']} | "
      f"{timing('first-contentful-paint')} | {timing('largest-contentful-paint')} | "
      f"{timing('total-blocking-time')} | {timing('cumulative-layout-shift')} | `{element}` | "
      f"{', '.join(failing) or 'none'} |")
PY
)")
done

table=$(printf '%s\n' \
  "Lighthouse $("$lighthouse" --version), default mobile settings, Debian's Chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), release build; $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores:" \
  "" \
  "| page | Performance | Accessibility | FCP | LCP | TBT | CLS | LCP element | accessibility audits failing |" \
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |" \
  "${rows[@]}")
echo "$table"
if [ -n "$out" ]; then
  printf '\n%s\n' "$table" >>"$out"
fi
