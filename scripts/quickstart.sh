#!/bin/sh
# Quickstart: a whole gobearmon cluster on this machine.
#
# Builds gobearmon, makes sure MariaDB runs (installing or starting it), loads install.sql into
# the demo database `gobearmon_demo` with example checks (one healthy, one failing, a ping),
# starts a viewserver group of three and three workers on loopback, a small web server for
# the healthy check and a webhook receiver that prints every notification, and shows the
# flips as they happen. Ctrl-C stops everything it started.
#
#   scripts/quickstart.sh            one MariaDB server (the machine's, at 127.0.0.1:3306)
#   scripts/quickstart.sh --galera   a three-node MariaDB Galera cluster on loopback
#                                    (ports 33061-33063), `database` listing all three
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh

GALERA=0
case "${1:-}" in
    --galera) GALERA=1 ;;
    "") ;;
    *) die "usage: scripts/quickstart.sh [--galera]" ;;
esac

log "building (release)"
cargo build --release --quiet
BIN=$PWD/target/release/gobearmon
DIR=$PWD/target/quickstart
rm -rf "$DIR"
mkdir -p "$DIR"

PIDS=""
cleanup() {
    trap - INT TERM EXIT
    log "stopping"
    # The Galera nodes (started with their own pid files).
    for f in "$DIR"/galera/n*/pid; do [ -f "$f" ] && PIDS="$PIDS $(cat "$f")"; done
    # shellcheck disable=SC2086
    [ -n "$PIDS" ] && kill $PIDS 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT
start() { # name, command...
    name=$1; shift
    "$@" >"$DIR/$name.log" 2>&1 &
    PIDS="$PIDS $!"
}

DB_URLS='"mysql://gobearmon:gobearmon-demo@127.0.0.1:3306/gobearmon_demo"'
if [ "$GALERA" = 1 ]; then
    galera_start
    sql() { mariadb -uroot -h127.0.0.1 -P33061 "$@"; }
    DB_URLS='"mysql://gobearmon:gobearmon-demo@127.0.0.1:33061/gobearmon_demo", "mysql://gobearmon:gobearmon-demo@127.0.0.1:33062/gobearmon_demo", "mysql://gobearmon:gobearmon-demo@127.0.0.1:33063/gobearmon_demo"'
else
    ensure_mariadb
    sql() { mariadb_root "$@"; }
fi
log "loading install.sql into gobearmon_demo"
sql -e "DROP DATABASE IF EXISTS gobearmon_demo; CREATE DATABASE gobearmon_demo;
  CREATE USER IF NOT EXISTS 'gobearmon'@'127.0.0.1' IDENTIFIED BY 'gobearmon-demo';
  GRANT ALL ON gobearmon_demo.* TO 'gobearmon'@'127.0.0.1';"
sql gobearmon_demo < install.sql
sql gobearmon_demo <<'SQL'
INSERT INTO checks (id, name, type, data, check_interval, delay) VALUES
  (1, 'local web (healthy)', 'http', '{"url":"http://127.0.0.1:18080/","expect_status":200}', 5, 1),
  (2, 'nothing listens here (failing)', 'tcp', '{"address":"127.0.0.1:1","timeout":3}', 5, 1),
  (3, 'loopback ping', 'icmp', '{"target":"127.0.0.1"}', 10, 1);
INSERT INTO contacts (id, type, data) VALUES (1, 'webhook', 'http://127.0.0.1:18090/hook');
INSERT INTO alerts (check_id, contact_id, type) VALUES (1, 1, 'both'), (2, 1, 'both'), (3, 1, 'both');
INSERT INTO status_pages (id, slug, title, description) VALUES
  (1, 'demo', 'Demo status', 'The quickstart''s checks, as the public sees them.');
INSERT INTO status_page_checks (page_id, check_id, group_name, display_name, sort_order) VALUES
  (1, 1, 'Web', 'Website', 1), (1, 2, 'Back end', 'Billing', 2);
SQL

# The healthy check's target and the webhook receiver.
mkdir -p "$DIR/www" && echo ok > "$DIR/www/index.html"
start web python3 -m http.server 18080 --bind 127.0.0.1 --directory "$DIR/www"
cat > "$DIR/receiver.py" <<'PY'
import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            n = json.loads(body)
            msg = f" ({n['message']})" if n.get("message") else ""
            line = f"{time.strftime('%H:%M:%S')}  check {n['check']['id']} [{n['check']['name']}] {n['old_status']} -> {n['new_status']}{msg}  confirmed by {', '.join(n.get('confirmed_by') or []) or '-'}"
        except Exception:
            line = body.decode(errors="replace")
        print(line, flush=True)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", 18090), H).serve_forever()
PY
python3 "$DIR/receiver.py" &
PIDS="$PIDS $!"

PEERS='["127.0.0.1:17001", "127.0.0.1:17002", "127.0.0.1:17003"]'
for i in 1 2 3; do
    cat > "$DIR/vs$i.toml" <<TOML
[default]
password = "demo-cluster-secret-0001"
[viewserver]
id = $i
addr = "127.0.0.1:1700$i"
peers = $PEERS
data_dir = "$DIR/vs$i-data"
TOML
    cat > "$DIR/w$i.toml" <<TOML
[default]
password = "demo-cluster-secret-0001"
[worker]
id = "w$i"
location = "demo-$i"
addr = "127.0.0.1:1710$i"
view_addr = $PEERS
[controller]
addr = "127.0.0.1:1720$i"
database = [$DB_URLS]
confirmations = 2
reload_period = "2s"
[web]
addr = "127.0.0.1:1730$i"
api_tokens = ["demo-api-token-0001"]
TOML
    $BIN check-config "$DIR/vs$i.toml" >/dev/null
    $BIN check-config "$DIR/w$i.toml" >/dev/null
done
# The dashboard's demo user (an operator): `user add` reads the password from stdin.
echo "demo-password" | $BIN user add demo --role operator --config "$DIR/w1.toml" >/dev/null
log "starting 3 viewservers and 3 workers (logs in $DIR)"
for i in 1 2 3; do start "vs$i" "$BIN" run "$DIR/vs$i.toml"; done
for i in 1 2 3; do start "w$i" "$BIN" run "$DIR/w$i.toml"; done

i=0
until "$BIN" status --json --config "$DIR/w1.toml" >"$DIR/status.json" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 60 ] && die "no controller after 30 s; see the logs in $DIR"
    sleep 0.5
done
log "cluster up; controller: $(grep -m1 '"controller"' "$DIR/status.json")"
log "flips appear below as the webhook receives them (the failing check goes offline after two rounds, about 10 s)"
log "try: $BIN status --config $DIR/w1.toml    |   kill the controller and watch another take over"
log "JSON API (any worker; history fills as results arrive, hourly rollups after the first hour):"
log "  curl -H 'Authorization: Bearer demo-api-token-0001' http://127.0.0.1:17301/api/v1/checks"
log "  $BIN history 1 --config $DIR/w1.toml    |   $BIN uptime 2 --window 1h --config $DIR/w1.toml"
log "Prometheus metrics (any worker): http://127.0.0.1:17101/metrics  (Grafana dashboard: scripts/grafana/gobearmon.json)"
log "dashboard (any worker): http://127.0.0.1:17301/  login demo / demo-password"
log "public status page: http://127.0.0.1:17301/status/demo   badge: http://127.0.0.1:17301/badge/1/uptime/24h.svg"
log "Ctrl-C stops everything"
wait
