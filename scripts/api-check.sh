#!/usr/bin/env bash
# Checks the OpenAPI document with real tools (spec §14): openapi-spec-validator on the
# document a live server serves, then schemathesis against that server, with the admin
# token, failing on a 5xx, a status code the document does not list, or a response that
# breaks its schema. The streams and the simulator (which may wait for minutes) are in the
# document but left out of the fuzzing. Both tools come from PyPI, in .tools/venv
# (scripts/setup.sh test).
#   scripts/api-check.sh [server binary]   (default: target/debug/order-tracking)
set -euo pipefail
cd "$(dirname "$0")/.."

server=${1:-target/debug/order-tracking}
venv=.tools/venv/bin
token=api-check-token
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

DATABASE_URL="sqlite://$work/orders.db" ADMIN_TOKEN=$token LEPTOS_SITE_ADDR="127.0.0.1:$port" \
  RUST_LOG=warn "$server" >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -sf "$base/healthz" >/dev/null && break
  sleep 0.1
done

curl -sf "$base/api/openapi.json" -o "$work/openapi.json"
"$venv/openapi-spec-validator" "$work/openapi.json"

"$venv/schemathesis" run "$base/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path '/orders/{id}/stream' --exclude-path /stream --exclude-path '/orders/{id}/simulate' \
  --max-examples 100 --seed 20261202 --no-color

if grep -q "internal error" "$work/server.log"; then
  echo "the server logged an internal error:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
