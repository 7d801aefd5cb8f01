"""The Grafana dashboard: it loads, its PromQL parses (promtool), and it reads only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from flywheel.settings import Settings
from server.app import create_app
from tests.deploy.conftest import DEPLOY, run_promtool
from tests.fake_engine import FakeEngine
from tests.lora_factory import write_tiny_base

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "flywheel.json"
PROMETHEUS_OWN = {"up", "ALERTS"}  # series Prometheus writes itself (scrape health, alert state)
# Grafana's variables, replaced by what Grafana would send, so that the query is plain PromQL.
VARIABLES = {"$__rate_interval": "1m", "$adapter": ".*"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created")}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs(board: dict) -> list[str]:
    """Every PromQL query of the dashboard: its panels' targets and its Prometheus annotations."""
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    return exprs


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def plain(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The series names an expression reads (Flywheel's, recorded ones, and Prometheus' own)."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = set(re.findall(r"(?<![\w:])(flywheel[\w:]*)", unquoted))
    return names | {n for n in PROMETHEUS_OWN if re.search(rf"(?<![\w:]){n}(?![\w:])", unquoted)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name the gateway can export, from a /metrics scrape of the app over the fake engine."""
    tmp = tmp_path_factory.mktemp("gateway")
    settings = Settings(data_dir=tmp / "data", model_path=write_tiny_base(tmp / "base"), max_lora_rank=8,
                        train_lora_rank=8)
    engine = FakeEngine()
    with TestClient(create_app(settings, lambda _: engine)) as client:
        text = client.get("/metrics").text
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def test_the_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] == "flywheel" and board["panels"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"] and panel["datasource"]["uid"] == uid, panel["title"]
        assert all(t["expr"].strip() and t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("requests", "tokens per second", "time to first token", "inter-token", "queue depth",
                  "up-rate per version", "training runs"):
        assert topic in titles
    assert any(a["name"] == "Alias moves" for a in board["annotations"]["list"])
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "flywheel.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path):
    # promtool has no offline query check; rule files are parsed by Prometheus' own PromQL parser.
    exprs = dashboard_exprs(dashboard())
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": plain(e)} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run_promtool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_the_dashboard_and_the_alerts_read_only_exported_metrics(exported: set[str]):
    recorded = {rule["record"] for rule in alert_rules() if "record" in rule}
    known = exported | recorded | PROMETHEUS_OWN
    used = {name: "dashboard" for e in dashboard_exprs(dashboard()) for name in metric_names(e)}
    used |= {name: rule.get("alert") or rule["record"] for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert {name: where for name, where in used.items() if name not in known} == {}
    # Each alert's subject is a metric of the gateway's, not only recorded or Prometheus' own series.
    for topic in ("flywheel_engine_ready", "flywheel_training_consecutive_failures", "flywheel_version_up_rate",
                  "flywheel_feedback_store_failing", "flywheel_feedback_store_failed_batches_total"):
        assert topic in used and topic in exported


def test_the_name_check_sees_a_missing_metric(exported: set[str]):
    expr = 'rate(flywheel_requests_totl{status="flywheel_x"}[5m]) or up'
    assert metric_names(expr) == {"flywheel_requests_totl", "up"}  # quoted label values are no names
    assert "flywheel_requests_totl" not in exported and "flywheel_requests_total" in exported
