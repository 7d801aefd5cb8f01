"""The Grafana dashboard: it loads, its PromQL parses (promtool), and it reads only metrics that exist: the
gateway's, and vLLM's own as its stat logger registers them (tests/integration/test_engine_metrics.py checks those
against the real engine's /metrics)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from adapters.runs import RunStore
from flywheel.settings import Settings
from server.app import create_app
from tests.deploy.conftest import DEPLOY, run_promtool
from tests.fake_engine import FakeEngine
from tests.gateway.test_alert_metrics import rate_answers
from tests.gateway.test_chat_routes import HI, register
from tests.gateway.test_engine_faults import wait_for
from tests.lora_factory import write_lora, write_tiny_base

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
    """The series names an expression reads (Flywheel's, vLLM's, recorded ones, and Prometheus' own)."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = set(re.findall(r"(?<![\w:])((?:flywheel|vllm:)[\w:]*)", unquoted))
    return names | {n for n in PROMETHEUS_OWN if re.search(rf"(?<![\w:]){n}(?![\w:])", unquoted)}


def register_vllm_metrics(folder: Path) -> None:
    """vLLM's Prometheus stat logger, registered in prometheus_client's default registry as the engine does it at
    start (a one-layer model config is enough: it reads the model's name and the engine's settings only)."""
    from transformers import LlamaConfig
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.metrics.loggers import PrometheusStatLogger

    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, vocab_size=128, max_position_embeddings=64).save_pretrained(folder)
    config = EngineArgs(model=str(folder), enable_lora=True, max_model_len=64, skip_tokenizer_init=True)
    PrometheusStatLogger(config.create_engine_config(), [0])


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of the app over the fake engine, with vLLM's metrics registered as its engine registers them,
    after a little of everything: chat on two versions of an adapter and on the base model, ratings of both
    versions, a promote, and training runs."""
    from vllm.v1.metrics.prometheus import unregister_vllm_metrics

    tmp = tmp_path_factory.mktemp("gateway")
    register_vllm_metrics(tmp / "vllm-model")
    try:
        yield scrape_after_traffic(tmp)
    finally:
        unregister_vllm_metrics()  # other modules' apps in this process export no engine metrics


def scrape_after_traffic(tmp: Path) -> str:
    base = write_tiny_base(tmp / "base")
    settings = Settings(data_dir=tmp / "data", model_path=base, registry_poll_seconds=0.05, max_lora_rank=8,
                        train_lora_rank=8)
    engine = FakeEngine()
    with TestClient(create_app(settings, lambda _: engine)) as client:
        wait_for(lambda: client.get("/ready").status_code == 200, "ready")
        assert client.post("/v1/chat/completions", json={"messages": HI}).status_code == 200
        for version in (1, 2):
            lora = write_lora(tmp / f"a{version}", base, seed=version)
            assert register(client, "bot", lora, None).status_code == 201
            assert client.post("/admin/adapters/bot/promote", json={"version": version}).status_code == 200
            wait_for(lambda v=version: client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"})
                     .json()["adapter"] == f"bot@{v}", f"bot@{version} served")
            rate_answers(client, "bot", "uud")
        runs = RunStore(settings.trainer_db)
        for outcome in ("succeeded", "failed"):
            runs.finish(runs.create("bot", "running"), outcome)
        return client.get("/metrics").text


@pytest.fixture(scope="module")
def exported(scraped: str) -> set[str]:
    """Every series name the gateway can export (families without samples yet included)."""
    names = set()
    for family in text_string_to_metric_families(scraped):
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
                  "kv cache", "up-rate per version", "training runs"):
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


def series_of(scraped: str) -> list[dict]:
    """The scrape as promtool input series that keep growing (counters, buckets) or hold (gauges)."""
    series = []
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = {"job": "flywheel", "instance": "gw:8000", **sample.labels}
            selector = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
            grows = family.type in ("counter", "histogram")
            series.append({"series": f"{sample.name}{{{selector}}}",
                           "values": f"{sample.value:g}{'+1' if grows else ''}x20"})
    return series


def test_every_dashboard_query_finds_series_in_a_real_scrape(promtool: str, scraped: str, tmp_path: Path):
    """Evaluated by promtool over the gateway's own series (and the recording rules of alerts.yml), each query
    returns something: a wrong metric, label or value in a selector would leave its panel empty."""
    exprs = [e for e in dashboard_exprs(dashboard()) if not metric_names(e) & PROMETHEUS_OWN]
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "30s", "tests": [{
        "interval": "30s", "input_series": series_of(scraped),
        "promql_expr_test": [{"expr": f"(count({plain(e)}) > bool 0) or vector(0)", "eval_time": "5m",
                              "exp_samples": [{"labels": "{}", "value": 1}]} for e in exprs]}]}
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(tests, width=1000))
    result = run_promtool(promtool, "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_and_the_alerts_read_only_exported_metrics(exported: set[str]):
    recorded = {rule["record"] for rule in alert_rules() if "record" in rule}
    known = exported | recorded | PROMETHEUS_OWN
    used = {name: "dashboard" for e in dashboard_exprs(dashboard()) for name in metric_names(e)}
    used |= {name: rule.get("alert") or rule["record"] for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert {name: where for name, where in used.items() if name not in known} == {}
    # Each alert's subject is a metric of the gateway's, not only recorded or Prometheus' own series.
    for topic in ("flywheel_engine_ready", "flywheel_training_consecutive_failures", "flywheel_version_up_rate",
                  "flywheel_feedback_store_failing", "flywheel_feedback_store_failed_batches_total",
                  "vllm:num_requests_waiting"):
        assert topic in used and topic in exported


def test_the_name_check_sees_a_missing_metric(exported: set[str]):
    expr = 'rate(flywheel_requests_totl{status="flywheel_x"}[5m]) or up'
    assert metric_names(expr) == {"flywheel_requests_totl", "up"}  # quoted label values are no names
    assert metric_names("sum(vllm:num_requests_waitin) / vllm:kv_cache_usage_perc") == {
        "vllm:num_requests_waitin", "vllm:kv_cache_usage_perc"}
    assert "vllm:num_requests_waitin" not in exported and "vllm:num_requests_waiting" in exported
    assert "flywheel_requests_totl" not in exported and "flywheel_requests_total" in exported
