#!/usr/bin/env bash
# `make cluster`: several instances on one machine, as they would run on several hosts.
# A throw-away Postgres (Debian's pg_virtualenv), a redis-server, two instances of the app
# sharing both, and nginx with deploy/nginx.conf balancing between them on :3000 (and over
# HTTPS with HTTP/2, a self-signed certificate, on :3001). Ctrl-C
# stops everything and drops the database.
#
#   CLUSTER_PORT  where nginx listens (default 3000); the instances listen on +11 and +12
#                 (a third on +14, a fourth on +15…), Redis on +13
#   CLUSTER_INSTANCES how many instances (default 2)
#   CLUSTER_DIR   where it writes logs, the nginx config and <name>.pid / <name>.port for
#                 a.instance, b.instance…, redis and nginx (default: a new temporary folder),
#                 and <name>.start: a script that starts that part again (after a kill -9),
#                 as the chaos run (`make chaos`) does; postgres.crash / postgres.start stop
#                 the database as a crash would and start it again
#   SERVER_BINARY the app (default target/debug/order-tracking; `make cluster` builds it)
#   ADMIN_TOKEN   passed on to every instance when set
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Start over inside a throw-away Postgres cluster: pg_virtualenv sets PGHOST, PGPORT, PGUSER,
# PGPASSWORD and PGDATABASE for what it runs, and drops the cluster when it ends.
if [ -z "${CLUSTER_IN_PG:-}" ]; then
  CLUSTER_IN_PG=1 exec pg_virtualenv -t "$0" "$@"
fi

port=${CLUSTER_PORT:-3000}
dir=${CLUSTER_DIR:-$(mktemp -d -t order-tracking-cluster.XXXXXX)}
binary=${SERVER_BINARY:-$root/target/debug/order-tracking}
mkdir -p "$dir"
# A test stops the cluster with SIGTERM to this script (pg_virtualenv then drops the database).
echo "$$" >"$dir/cluster.pid"
[ -x "$binary" ] || { echo "no server binary at $binary: run 'cargo leptos build' first" >&2; exit 1; }

say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
names=()
sleeper=""
stop() {
  trap - EXIT INT TERM
  say "stopping the cluster"
  [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null || true
  # Whatever runs now, first start or restarted: the pid files say.
  for name in "${names[@]}"; do
    pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
      kill -CONT "$pid" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

# Starts `name` in the background with its output in $dir/name.log, through $dir/name.start:
# a script that starts it again the same way, its pid in $dir/name.pid.
start() {
  local name=$1; shift
  {
    echo '#!/usr/bin/env bash'
    printf '%q ' "$@"
    printf '>>%q 2>&1 </dev/null &\n' "$dir/$name.log"
    printf 'echo "$!" >%q\n' "$dir/$name.pid"
  } >"$dir/$name.start"
  chmod +x "$dir/$name.start"
  names+=("$name")
  "$dir/$name.start"
}

wait_for() {
  local what=$1 url=$2
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$what did not start; see $dir" >&2
  exit 1
}

redis_port=$((port + 13))
say "redis-server on 127.0.0.1:$redis_port"
start redis redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
echo "$redis_port" >"$dir/redis.port"

# The database crashes (`-m immediate`: no checkpoint, recovery from the log at start) and
# comes back, for the chaos run.
pg_cluster=$(pg_lsclusters -h | awk '{ print $1 " " $2; exit }')
for action in crash start; do
  if [ "$action" = crash ]; then how="stop -m immediate"; else how="start"; fi
  {
    echo '#!/usr/bin/env bash'
    for var in PG_CLUSTER_CONF_ROOT PGSYSCONFDIR PG_CONFIG; do
      printf 'export %s=%q\n' "$var" "${!var:-}"
    done
    echo "exec pg_ctlcluster $pg_cluster $how"
  } >"$dir/postgres.$action"
  chmod +x "$dir/postgres.$action"
done

database_url="postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$PGDATABASE"
instances=${CLUSTER_INSTANCES:-2}
all_names=(a b c d e f g h)
upstreams=""
for ((n = 0; n < instances; n++)); do
  name=${all_names[$n]}
  # a, b on +11, +12 (Redis has +13), then +14, +15…
  if [ "$n" -lt 2 ]; then instance_port=$((port + 11 + n)); else instance_port=$((port + 12 + n)); fi
  upstreams+="    server 127.0.0.1:$instance_port max_fails=1 fail_timeout=5s;\\n"
  say "instance $name on 127.0.0.1:$instance_port (Postgres on $PGHOST:$PGPORT, Redis on :$redis_port)"
  start "$name.instance" env \
    DATABASE_URL="$database_url" \
    REDIS_URL="redis://127.0.0.1:$redis_port" \
    LEPTOS_SITE_ADDR="127.0.0.1:$instance_port" \
    LEPTOS_SITE_ROOT="$root/target/site" \
    LEPTOS_OUTPUT_NAME=order-tracking \
    TRUSTED_PROXIES=127.0.0.1 \
    RUST_LOG="${RUST_LOG:-info}" \
    "$binary"
  echo "$instance_port" >"$dir/$name.instance.port"
  # One at a time: the first applies the migrations.
  wait_for "instance $name" "http://127.0.0.1:$instance_port/healthz"
done

say "nginx on http://127.0.0.1:$port and https://127.0.0.1:$((port + 1)) (HTTP/2, self-signed), balancing between the instances (deploy/nginx.conf)"
# A self-signed certificate for the HTTPS/HTTP/2 side, on the next port.
openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=localhost \
    -keyout "$dir/tls.key" -out "$dir/tls.pem" 2>/dev/null
sed -e "s|    server 127.0.0.1:3000 max_fails=1 fail_timeout=5s;|${upstreams%\\n}|" \
    -e "s|listen 80;|listen 127.0.0.1:$port;|" \
    -e "s|listen 443 ssl http2;|listen 127.0.0.1:$((port + 1)) ssl http2;|" \
    -e "s|/etc/ssl/certs/ssl-cert-snakeoil.pem|$dir/tls.pem|" \
    -e "s|/etc/ssl/private/ssl-cert-snakeoil.key|$dir/tls.key|" \
    deploy/nginx.conf >"$dir/site.conf"
cat >"$dir/nginx.conf" <<CONF
daemon off;
# A master, so that \`kill -HUP\` reloads the configuration as a deployment does. Its worker
# runs as whoever runs this (as root nginx would drop to nobody, who may not write its
# temporary files into this folder; as anyone else the line is ignored).
master_process on;
user $(id -un) $(id -gn);
worker_processes 1;
pid $dir/nginx.pid.master;
error_log $dir/nginx.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  include $dir/site.conf;
}
CONF
start nginx nginx -p "$dir" -e "$dir/nginx.error.log" -c "$dir/nginx.conf"
wait_for nginx "http://127.0.0.1:$port/healthz"
echo "$port" >"$dir/nginx.port"

say "ready: http://127.0.0.1:$port  (logs and pids in $dir; Ctrl-C stops it all)"
# Runs until interrupted. An instance that dies (or is killed, as the tests do) does not stop
# the others: that is the point. (Not \`wait\`: what the chaos run restarts is no child of
# this script, and every first child may be gone.)
sleep infinity &
sleeper=$!
wait "$sleeper"
