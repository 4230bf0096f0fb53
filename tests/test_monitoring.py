"""k8s/monitoring: the PrometheusRule, ServiceMonitor and Service (custom resources are not in
Kubernetes' schema: their structure is checked here), how they fit the `schedule` Deployment, that
every metric a rule reads is one the program exposes, and the rules themselves through the real
`promtool check rules` and `promtool test rules` (tests/promtool/)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.metrics import ScheduleMetrics
from reconcile.settings import EVENT_SOURCES
from tests.k8stools import K8S, REPO, Workload, load_docs, workloads

MONITORING = K8S / "monitoring"
PROMTOOL_TESTS = REPO / "tests" / "promtool"
MONITORING_API = "monitoring.coreos.com/v1"
APP_LABEL = ("app.kubernetes.io/name", "tenant-reconcile")
SEVERITIES = {"critical", "warning", "info"}


def doc_of(kind: str) -> dict[str, Any]:
    found = [doc for path in sorted(MONITORING.glob("*.yaml")) if path.name != "kustomization.yaml"
             for doc in load_docs(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} under {MONITORING}, found {len(found)}"
    return found[0]


def rules() -> list[dict[str, Any]]:
    return [rule for group in doc_of("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def scheduler() -> Workload:
    [deployment] = [w for w in workloads() if w.kind == "Deployment"]
    return deployment


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_anchors() -> set[str]:
    text = (MONITORING / "README.md").read_text(encoding="utf-8")
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def exposed_names() -> set[str]:
    """Every name the real ScheduleMetrics of a `schedule --listen` process exposes: its families and
    their samples (`_total`, `_bucket`...)."""
    metrics = ScheduleMetrics(("schedule", "startup", "catch-up", "event"), EVENT_SOURCES)
    families = list(metrics.registry.collect())
    suffixes = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    # A labelled family has no sample until its first child: its names come from its type.
    by_type = {f.name + suffix for f in families for suffix in suffixes.get(f.type, ())}
    return by_type | {sample.name for f in families for sample in f.samples}


# -- the PrometheusRule ----------------------------------------------------------------------------

def test_the_prometheus_rule_is_picked_up_by_kube_prometheus_stack():
    rule = doc_of("PrometheusRule")
    assert rule["apiVersion"] == MONITORING_API
    labels = rule["metadata"]["labels"]
    assert labels["prometheus"] == "kube-prometheus" and labels["role"] == "alert-rules"
    assert labels[APP_LABEL[0]] == APP_LABEL[1] and "namespace" not in rule["metadata"]
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"], group.get("name")


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_in_the_monitoring_readme():
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) and len(names) >= 8
    anchors = readme_anchors()
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert all(annotations[key].strip() for key in annotations), rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "k8s/monitoring/README.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no heading {rule['alert']} in k8s/monitoring/README.md"


def test_the_alerts_cover_the_cronjob_without_a_pushgateway_and_the_scheduler():
    exprs = " ".join(rule["expr"] for rule in rules())
    for metric in ("kube_cronjob_status_last_successful_time", "kube_cronjob_created", "kube_job_failed",
                   "kube_job_owner", "tenant_reconcile_last_success_timestamp_seconds",
                   "tenant_reconcile_last_run_status", "tenant_reconcile_event_lag_seconds_bucket"):
        assert metric in exprs, metric
    assert "push" not in exprs.lower()


def test_every_metric_a_rule_reads_is_one_the_schedule_process_exposes():
    exposed = exposed_names()
    used = {name for rule in rules() for name in re.findall(r"\btenant_reconcile_\w+", rule["expr"])}
    assert used and used <= exposed, used - exposed


def test_the_scrape_job_the_rules_name_is_the_service_the_service_monitor_scrapes():
    service, monitor = doc_of("Service"), doc_of("ServiceMonitor")
    assert "jobLabel" not in monitor["spec"]  # the job label is then the Service's name
    jobs = {job for rule in rules() for job in re.findall(r'up\{job="([^"]+)"\}', rule["expr"])}
    assert jobs == {service["metadata"]["name"]}
    deployments = {d for rule in rules() for d in re.findall(r'deployment="([^"]+)"', rule["expr"])}
    assert deployments == {scheduler().name}
    cronjobs = {c for rule in rules() for c in re.findall(r'(?:cronjob|owner_name)="([^"]+)"', rule["expr"])}
    assert cronjobs == {w.name for w in workloads() if w.kind == "CronJob"}


# -- ServiceMonitor, Service, Deployment -------------------------------------------------------------

def test_the_service_monitor_selects_the_service_by_its_labels_and_port_name():
    service, monitor = doc_of("Service"), doc_of("ServiceMonitor")
    assert monitor["apiVersion"] == MONITORING_API
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["metadata"]["labels"][APP_LABEL[0]] == APP_LABEL[1]
    assert "namespaceSelector" not in monitor["spec"], "the Service of the ServiceMonitor's own namespace"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def test_the_service_reaches_the_schedulers_metrics_port_and_no_other_pod():
    service, deployment = doc_of("Service"), scheduler()
    pod_labels = deployment.doc["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= pod_labels.items()
    for other in workloads():
        if other.label != deployment.label:
            template = other.doc["spec"]["jobTemplate"]["spec"] if other.kind == "CronJob" else other.doc["spec"]
            assert not selector.items() <= template["template"]["metadata"]["labels"].items(), other.label
    [port] = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in deployment.container["ports"]}
    assert port["name"] == "metrics" and port["targetPort"] == "metrics" and "metrics" in container_ports
    args = deployment.container["args"]
    assert args[args.index("--metrics-port") + 1] == str(container_ports["metrics"]) == str(port["port"])


def test_the_schedulers_probes_read_healthz_on_the_metrics_port_and_it_stays_one_replica():
    deployment = scheduler()
    for probe in ("readinessProbe", "livenessProbe"):
        get = deployment.container[probe]["httpGet"]
        assert get == {"path": "/healthz", "port": "metrics"}, probe
    assert deployment.doc["spec"]["replicas"] == 1


def test_the_event_listener_opt_in_shown_in_the_deployment_is_a_valid_command_line():
    from jobs.cli import cli
    from reconcile.settings import load_settings

    text = scheduler().path.read_text(encoding="utf-8")
    shown = [yaml.safe_load(line.split("args:", 1)[1]) for line in text.splitlines()
             if line.strip().startswith("#") and "args:" in line and "--listen" in line]
    assert shown, "no commented args with --listen in the Deployment"
    for args in shown:
        assert args[0] == "schedule"
        context = cli.commands["schedule"].make_context("schedule", list(args[1:]))
        assert load_settings(env={}, flags={"listen": context.params["listen"]}).listen


# -- promtool --------------------------------------------------------------------------------------

def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("REQUIRE_PROMTOOL"):
            pytest.fail("REQUIRE_PROMTOOL is set but promtool is not on PATH (Debian: apt-get install prometheus)")
        pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus); REQUIRE_PROMTOOL=1 makes this a "
                    "failure")
    return found


def rules_file(directory: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file, as the operator hands them over."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": doc_of("PrometheusRule")["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_checks_the_rules(tmp_path):
    command = [promtool(), "check", "rules", str(rules_file(tmp_path))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_show_every_alert_firing_and_not_firing(tmp_path):
    tool = promtool()
    rules_file(tmp_path)
    tests = sorted(PROMTOOL_TESTS.glob("*.test.yaml"))
    assert tests
    tested: set[str] = set()
    for test in tests:
        data = yaml.safe_load(test.read_text(encoding="utf-8"))
        assert data["rule_files"] == ["rules.yaml"]
        for case in data["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    tested.add(check["alertname"])
        shutil.copy(test, tmp_path / test.name)
    assert tested == {rule["alert"] for rule in rules()}, "every alert must be shown firing"
    result = subprocess.run([tool, "test", "rules", *(t.name for t in tests)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout


def test_every_metric_of_the_schedule_process_is_documented():
    metrics = ScheduleMetrics(("schedule",), EVENT_SOURCES)
    names = {f.name + ("_total" if f.type == "counter" else "") for f in metrics.registry.collect()
             if f.name.startswith("tenant_reconcile_")}
    assert len(names) == 10
    for readme in (REPO / "README.md", MONITORING / "README.md"):
        text = readme.read_text(encoding="utf-8")
        assert {name for name in names if f"`{name}" not in text} == set(), readme.relative_to(REPO)


# -- the Grafana dashboard -----------------------------------------------------------------------------

# Grafana's variables, as concrete values promtool can parse.
GRAFANA_VARIABLES = {"$namespace": "shop", "$__rate_interval": "5m", "$__interval": "1m"}


def dashboard_queries() -> dict[str, list[tuple[str, str]]]:
    """(where, query) per datasource type: every panel target and the namespace variable's query."""
    import json

    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    found: dict[str, list[tuple[str, str]]] = {"prometheus": [], "loki": []}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[panel["datasource"]["type"]].append((f"panel{panel['id']}_{target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+), \w+\)", variable["query"]["query"])
            assert selector, variable["query"]
            found["prometheus"].append((f"variable_{variable['name']}", selector.group(1)))
    return found


def with_values(query: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    assert "$" not in query, query
    return query


def test_every_prometheus_query_of_the_dashboard_parses_and_reads_exposed_metrics(tmp_path):
    queries = dashboard_queries()["prometheus"]
    exposed = exposed_names()
    used = {name for _, query in queries for name in re.findall(r"\btenant_reconcile_\w+", query)}
    assert len(queries) >= 10 and used <= exposed, used - exposed
    path = tmp_path / "dashboard.rules.yaml"
    records = [{"record": f"dashboard:{where}", "expr": with_values(query)} for where, query in queries]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(records)} rules found" in result.stdout


def test_the_dashboards_loki_queries_read_the_reconcile_containers_json_lines():
    queries = dashboard_queries()["loki"]
    assert queries
    for where, query in queries:
        assert '{namespace="$namespace", container="reconcile"} | json |' in query, where
        assert re.search(r'\| event="(reconcile\.report|tenant\.error)"', query), where
    assert {w.container["name"] for w in workloads()} == {"reconcile"}
