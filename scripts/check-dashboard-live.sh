#!/usr/bin/env bash
# Runs the Grafana dashboard's queries and the alert rules against a running
# audit-stream:
#
#   scripts/check-dashboard-live.sh PORT
#
# Starts a real Prometheus on loopback (a free port, a temporary data directory,
# 1 s scrape and evaluation interval) scraping http://127.0.0.1:PORT/metrics with
# deploy/prometheus/alerts.yml loaded, waits until the target is up and has been
# scraped a few times, then
#   - runs every panel query of deploy/grafana/dashboards/audit-stream.json through
#     /api/v1/query (variables: job and instance match all, $__rate_interval 1m) and
#     fails, naming the panel, for any query that returns no data. Panels of metrics
#     that later versions export are skipped, and said so, while the service does
#     not export them;
#   - fails if any alert rule is in error state (and lists the alerts firing).
# Needs python3 and the Debian prometheus package (installed when missing, as root).
set -euo pipefail

if [ $# -ne 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 PORT_OF_RUNNING_SERVICE" >&2
    exit 2
fi
SERVICE_PORT="$1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DASHBOARD="$ROOT/deploy/grafana/dashboards/audit-stream.json"
ALERTS="$ROOT/deploy/prometheus/alerts.yml"
# Target up, then this many scrapes in the window, before querying.
MIN_SCRAPES=3
TIMEOUT_SECS=60

if ! command -v prometheus >/dev/null; then
    echo "installing the Debian prometheus package" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || {
        "${sudo[@]}" apt-get update -qq >/dev/null
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    }
fi

WORK="$(mktemp -d)"
PROM_PID=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    if [ -n "$PROM_PID" ]; then
        kill "$PROM_PID" 2>/dev/null || true
        wait "$PROM_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PROM_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cp "$ALERTS" "$WORK/alerts.yml"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: audit-stream
    static_configs:
      - targets: ["127.0.0.1:${SERVICE_PORT}"]
EOF

prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --web.listen-address="127.0.0.1:${PROM_PORT}" --log.level=warn \
    >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
echo "prometheus on 127.0.0.1:${PROM_PORT} (pid ${PROM_PID}) scraping 127.0.0.1:${SERVICE_PORT}/metrics"

rc=0
python3 - "http://127.0.0.1:${PROM_PORT}" "$DASHBOARD" "$MIN_SCRAPES" "$TIMEOUT_SECS" "$PROM_PID" <<'EOF' || rc=$?
import json, os, re, sys, time, urllib.error, urllib.parse, urllib.request

base, dashboard_path = sys.argv[1], sys.argv[2]
min_scrapes, timeout, prom_pid = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
# Metrics that later versions export: their panels are skipped while absent.
LATER = {"audit_stream_consumer_lag_records", "audit_stream_consumer_lag_seconds",
         "audit_stream_checkpoint_age_seconds", "audit_stream_partitions_restoring"}

def get(path, **params):
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)

def alive():
    try:
        os.kill(prom_pid, 0)
        return True
    except OSError:
        return False

deadline = time.monotonic() + timeout
def wait(what, ready):
    last = None
    while time.monotonic() < deadline:
        if not alive():
            sys.exit("prometheus exited; its log follows")
        try:
            ok, last = ready()
            if ok:
                return
        except OSError as e:
            last = str(e)
        time.sleep(0.5)
    sys.exit(f"timed out waiting for {what}: {last}")

def target_up():
    targets = get("/api/v1/targets")["data"]["activeTargets"]
    t = next((t for t in targets if t["labels"].get("job") == "audit-stream"), None)
    if t is None:
        return False, "no target yet"
    return t["health"] == "up", f"target {t['scrapeUrl']} is {t['health']}: {t.get('lastError') or '-'}"
wait("the target to be up", target_up)
print("target up")

def scraped():
    r = get("/api/v1/query", query='count_over_time(up{job="audit-stream"}[1m])')["data"]["result"]
    n = int(float(r[0]["value"][1])) if r else 0
    return n >= min_scrapes, f"{n} scrapes"
wait(f"{min_scrapes} scrapes", scraped)

exported = set(get("/api/v1/label/__name__/values")["data"])
print(f"{len(exported)} metric names in Prometheus, "
      f"{len([n for n in exported if n.startswith('audit_stream_')])} of them audit_stream_*")

def substitute(expr):
    expr = re.sub(r"\$__rate_interval|\$__interval|\$__range", "1m", expr)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)

def panels(ps, row=None):
    for p in ps:
        if p["type"] == "row":
            yield from panels(p.get("panels", []), p["title"])
        else:
            yield row, p

dash = json.load(open(dashboard_path))
ok = skipped = 0
failures = []
for row, p in panels(dash["panels"]):
    for t in p.get("targets", []):
        expr = substitute(t["expr"])
        name = f"panel {p['title']!r} (id {p['id']}, query {t['refId']})"
        try:
            res = get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as e:
            failures.append(f"{name}: query error {json.load(e).get('error')}\n    {expr}")
            continue
        data = res["data"]["result"]
        if data:
            ok += 1
            continue
        missing_later = sorted(n for n in set(re.findall(r"audit_stream_[a-z0-9_]+", expr)) & LATER
                               if n not in exported)
        if missing_later:
            skipped += 1
            print(f"skip {name}: {', '.join(missing_later)} not exported by this version")
            continue
        failures.append(f"{name}: no data\n    {expr}")

# Rules: wait until every group has been evaluated once, then no rule may be in error.
def evaluated():
    groups = get("/api/v1/rules")["data"]["groups"]
    pending = [g["name"] for g in groups if g.get("lastEvaluation", "").startswith("0001")]
    return bool(groups) and not pending, f"groups not yet evaluated: {pending}"
wait("the alert rules to be evaluated", evaluated)
rules = [r for g in get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
for r in rules:
    if r.get("health") == "err":
        failures.append(f"alert rule {r['name']}: {r.get('lastError')}")
firing = sorted({r["name"] for r in rules if r.get("state") == "firing"})
if firing:
    print(f"alerts firing (not a failure here): {', '.join(firing)}")

rules_ok = len([r for r in rules if r.get("health") != "err"])
for f in failures:
    print(f"FAIL {f}")
print(f"{ok} panel queries with data, {skipped} skipped, {rules_ok} of {len(rules)} alert rules healthy")
print(f"live dashboard checks: {ok + rules_ok} of {ok + rules_ok + len(failures)} ok")
sys.exit(1 if failures else 0)
EOF

if [ $rc -ne 0 ] && [ -s "$WORK/prometheus.log" ]; then
    echo "--- prometheus log" >&2
    tail -n 20 "$WORK/prometheus.log" >&2
fi
exit $rc
