"""Prometheus' config and Flywheel's alert rules, checked and unit-tested by the real promtool."""

from __future__ import annotations

import yaml

from tests.deploy.conftest import DEPLOY, run_promtool

PROMETHEUS = DEPLOY / "prometheus"


def test_the_alert_rules_pass_their_unit_tests(promtool: str):
    result = run_promtool(promtool, "test", "rules", PROMETHEUS / "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_config_and_the_rules_are_valid(promtool: str):
    for args in (("check", "config", PROMETHEUS / "prometheus.yml"), ("check", "rules", PROMETHEUS / "alerts.yml")):
        result = run_promtool(promtool, *args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    alerts = {rule["alert"] for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    cases = [case for test in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
             for case in test.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert alerts == {"FlywheelVersionUpRateBelowReplaced", "FlywheelGatewayDown", "FlywheelEngineNotReady",
                      "FlywheelTrainingFailingRepeatedly", "FlywheelFeedbackStoreRefusingWrites",
                      "FlywheelEngineSaturated"}
    assert alerts - firing == set(), "alerts without a case where they fire"
    assert alerts - quiet == set(), "alerts without a case where they stay quiet"


def test_compose_mounts_files_that_exist():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    mounts = [v.split(":")[0] for name in ("prometheus", "grafana") for v in services[name]["volumes"]]
    local = [m for m in mounts if m.startswith("./")]
    assert {"./prometheus/prometheus.yml", "./prometheus/alerts.yml", "./grafana/provisioning",
            "./grafana/dashboards"} <= set(local)
    assert [m for m in local if not (DEPLOY / m).exists()] == []
