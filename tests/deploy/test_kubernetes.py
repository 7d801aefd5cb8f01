"""deploy/kubernetes/ checked by real tools, and against the code it deploys.

Every manifest validates strictly (unknown fields fail) with kubernetes-validate against Kubernetes' own
schemas for KUBERNETES_VERSION, offline. The ServiceMonitor, a CRD kubernetes-validate has no schema for, is
validated with jsonschema against prometheus-operator's openAPIV3Schema (an excerpt, tests/deploy/
servicemonitor_schema.yaml, which says what it leaves out). Then the manifests must agree with the code: every
variable they set is a Settings field and the pod's environment builds a valid Settings, the probe and scrape
paths are the app's routes, ports match, the commands parse as real `flywheel` commands, and every container
runs as the image's own non-root user (deploy/Dockerfile) without privileges on a read-only root filesystem, with
a volume wherever it writes. Each checker is also run once on a broken copy, so a check that cannot fail is caught.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from flywheel.cli import app as flywheel_cli
from flywheel.settings import Settings
from server.routes import health
from tests.deploy.conftest import DEPLOY
from tests.deploy.test_image_user import DOCKERFILE, ImageUser, image_user

KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.33.0"  # the oldest release still supported upstream when this was written
SERVICEMONITOR_SCHEMA = Path(__file__).with_name("servicemonitor_schema.yaml")
NOT_APPLIED = {"kustomization.yaml", "secrets.example.yaml"}  # the Secrets are created by hand (its header)


def load_all() -> list[dict]:
    """Every resource in deploy/kubernetes/*.yaml, the Kustomization itself excluded."""
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(resources: list[dict], kind: str, name: str) -> dict:
    return next(r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name)


def strict(schema: object) -> object:
    """`schema` with `additionalProperties: false` on every object that lists its properties."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validate(resource: dict) -> None:
    """Raise when `resource` is not valid for KUBERNETES_VERSION (strict), or for the ServiceMonitor CRD."""
    if resource["kind"] == "ServiceMonitor":
        schema = strict(yaml.safe_load(SERVICEMONITOR_SCHEMA.read_text()))
        jsonschema.Draft202012Validator(schema).validate(resource)
        return
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def containers(resources: list[dict]) -> list[tuple[dict, dict]]:
    """(pod spec, container) for every container and init container of every Deployment."""
    pods = [r["spec"]["template"]["spec"] for r in resources if r["kind"] == "Deployment"]
    return [(pod, c) for pod in pods for c in pod["containers"] + pod.get("initContainers", [])]


def pod_environment(resources: list[dict], container: dict) -> dict[str, str]:
    """The variables `container` gets: envFrom's ConfigMaps and Secrets (the example's values), then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        found = find(resources, kind, source.get("configMapRef", source.get("secretRef"))["name"])
        env.update(found.get("data", {}) | found.get("stringData", {}))
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def security_problems(resources: list[dict], image: ImageUser) -> list[str]:
    """What lets a container run as root or gain privileges, or leaves a path it writes read-only.

    The pod runs as the image's uid:gid, fsGroup makes the volumes (the PVC too) writable for it, and each
    container drops every capability on a read-only root: /tmp and the image's HOME (vLLM's, Triton's, torch's
    caches) must be mounted volumes. The namespace enforces Pod Security "restricted" on top."""
    problems = []
    namespace = find(resources, "Namespace", "flywheel")["metadata"].get("labels", {})
    if namespace.get("pod-security.kubernetes.io/enforce") != "restricted":
        problems.append("namespace: Pod Security 'restricted' is not enforced")
    expected = {"runAsNonRoot": True, "runAsUser": image.uid, "runAsGroup": image.gid, "fsGroup": image.gid,
                "seccompProfile": {"type": "RuntimeDefault"}}
    for pod, container in containers(resources):
        name, pod_context = container["name"], pod.get("securityContext", {})
        problems += [f"{name}: pod {k} is {pod_context.get(k)!r}, not {v!r}" for k, v in expected.items()
                     if pod_context.get(k) != v]
        context = container.get("securityContext", {})
        if any(k in context for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "privileged")):
            problems.append(f"{name}: overrides the pod's user or asks for privileges")  # one user, set once
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if context.get("capabilities") != {"drop": ["ALL"]}:
            problems.append(f"{name}: capabilities are not drop ALL")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: the root filesystem is writable")
        mounts = {m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")}
        problems += [f"{name}: nothing writable at {path}" for path in ("/tmp", image.home) if path not in mounts]
    return problems


def setting_problems(resources: list[dict]) -> list[str]:
    """Variables set in the manifests that are not `FLYWHEEL_<Settings field>`."""
    fields = {f"FLYWHEEL_{name.upper()}" for name in Settings.model_fields}
    return [f"{c['name']}: {name}" for _, c in containers(resources)
            for name in pod_environment(resources, c) if name not in fields]


def parse_cli(args: list[str]) -> dict:
    """The parameters `args` (after `python -m flywheel`) give a real command; raises on a wrong one.

    Typer ships its own copy of click (`typer._click`), so groups are told apart by their `commands`; a group
    with options of its own (`flywheel train --watch`) parses them itself."""
    command = typer.main.get_command(flywheel_cli)
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        if args[0] not in command.commands:
            raise LookupError(f"no command {args[0]!r} in {command.name}")
        command, args = command.commands[args[0]], args[1:]
    return command.make_context(command.name, list(args)).params


@pytest.fixture(scope="module")
def resources() -> list[dict]:
    return load_all()


def test_every_manifest_validates_strictly(resources):
    kinds = sorted(r["kind"] for r in resources)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Namespace", "PersistentVolumeClaim",
                     "PodDisruptionBudget", "Secret", "Secret", "Service", "ServiceMonitor"]
    for resource in resources:
        validate(resource)


def test_a_broken_manifest_fails_validation(resources):
    gateway = copy.deepcopy(find(resources, "Deployment", "flywheel-gateway"))
    gateway["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(gateway)
    port = copy.deepcopy(find(resources, "Deployment", "flywheel-gateway"))
    port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(port)
    monitor = copy.deepcopy(find(resources, "ServiceMonitor", "flywheel"))
    monitor["spec"]["endpoints"][0]["intervall"] = "5s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    monitor = copy.deepcopy(find(resources, "ServiceMonitor", "flywheel"))
    monitor["spec"]["endpoints"][0]["interval"] = "5 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def test_the_kustomization_applies_every_manifest_but_the_example_secrets():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - NOT_APPLIED
    assert sorted(kustomization["resources"]) == sorted(files)
    assert set(kustomization) <= {"apiVersion", "kind", "namespace", "resources", "images"}
    assert kustomization["namespace"] == "flywheel"
    secrets = [r for r in yaml.safe_load_all((KUBERNETES / "secrets.example.yaml").read_text()) if r]
    assert {s["metadata"]["namespace"] for s in secrets} == {kustomization["namespace"]}
    images = {c["image"] for _, c in containers(load_all())}
    assert images == {i["name"] for i in kustomization["images"]}


def test_every_variable_is_a_setting_and_the_pods_settings_are_valid(resources, monkeypatch):
    assert setting_problems(resources) == []
    for _, container in containers(resources):
        for name in [n for n in Settings.model_fields]:
            monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)
        for name, value in pod_environment(resources, container).items():
            monkeypatch.setenv(name, value)
        settings = Settings(_env_file=None)
        if container["name"] == "gateway":
            settings.check_bind()  # 0.0.0.0 with both keys set
            assert len(settings.api_keys) == 2, "FLYWHEEL_API_KEYS is comma-separated"
            assert settings.database_url and settings.data_dir == Path("/data")
    broken = copy.deepcopy(resources)
    find(broken, "ConfigMap", "flywheel-settings")["data"]["FLYWHEEL_TENSOR_PARALLEL"] = "2"
    assert "gateway: FLYWHEEL_TENSOR_PARALLEL" in setting_problems(broken)


def test_paths_and_volumes_agree_with_the_settings(resources):
    settings = find(resources, "ConfigMap", "flywheel-settings")["data"]
    for pod, container in containers(resources):
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert set(mounts.values()) <= set(volumes), container["name"]
        if container.get("envFrom"):
            assert volumes[mounts[settings["FLYWHEEL_DATA_DIR"]]]["persistentVolumeClaim"]["claimName"] == \
                "flywheel-data"
            assert any(settings["FLYWHEEL_MODEL_PATH"].startswith(path + "/") for path in mounts)
        else:  # the init container prepares the model where the main container's FLYWHEEL_MODEL_PATH looks
            data_dir = pod_environment(resources, container)["FLYWHEEL_DATA_DIR"]
            assert Settings(data_dir=data_dir).default_model_dir == Path(settings["FLYWHEEL_MODEL_PATH"])
    assert find(resources, "PersistentVolumeClaim", "flywheel-data")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_probes_ports_and_scrape_agree_with_the_app(resources):
    routes = {route.path for route in health.router.routes if "GET" in route.methods}
    gateway = find(resources, "Deployment", "flywheel-gateway")["spec"]
    container = gateway["template"]["spec"]["containers"][0]
    port = container["ports"][0]
    assert port["containerPort"] == int(find(resources, "ConfigMap", "flywheel-settings")["data"]["FLYWHEEL_PORT"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert {"/health", "/ready"} <= routes
    service = find(resources, "Service", "flywheel")["spec"]
    assert service["ports"][0]["targetPort"] == port["name"]
    assert service["selector"] == gateway["selector"]["matchLabels"] == gateway["template"]["metadata"]["labels"]
    monitor = find(resources, "ServiceMonitor", "flywheel")["spec"]
    assert monitor["selector"]["matchLabels"] == find(resources, "Service", "flywheel")["metadata"]["labels"]
    assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [(service["ports"][0]["name"], "/metrics")]
    assert "/metrics" in routes
    # The job label is the Service's name; the alert on a gateway being down matches it.
    assert 'up{job="flywheel"}' in (DEPLOY / "prometheus" / "alerts.yml").read_text()


def test_gpus_rollout_and_drain(resources):
    settings = find(resources, "ConfigMap", "flywheel-settings")["data"]
    devices = 1
    for knob in ("TENSOR", "PIPELINE", "DATA"):
        devices *= int(settings[f"FLYWHEEL_{knob}_PARALLEL_SIZE"])
    gateway = find(resources, "Deployment", "flywheel-gateway")["spec"]
    container = gateway["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == devices
    assert container["resources"]["limits"]["nvidia.com/gpu"] == devices
    assert gateway["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert gateway["replicas"] >= 2
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert gateway["template"]["spec"]["terminationGracePeriodSeconds"] > int(pre_stop[1]) + 60
    trainer = find(resources, "Deployment", "flywheel-trainer")["spec"]
    assert trainer["replicas"] == 1 and trainer["strategy"]["type"] == "Recreate"


def test_commands_are_real_flywheel_commands(resources):
    commands = {c["name"]: c["command"] for _, c in containers(resources)}
    assert {c[:3] for c in map(tuple, commands.values())} == {("python", "-m", "flywheel")}
    assert parse_cli(commands["gateway"][3:])["trainer"] is False
    assert parse_cli(commands["trainer"][3:])["watch_"] is True
    assert parse_cli(commands["base-model"][3:]) == {"force": False}
    with pytest.raises(Exception, match="No such option"):
        parse_cli(["serve", "--no-trainerr"])
    with pytest.raises(LookupError):
        parse_cli(["trian", "--watch"])


def test_every_container_runs_as_the_images_non_root_user(resources):
    image = image_user(DOCKERFILE.read_text())
    assert image.uid not in (None, 0) and image.home
    assert security_problems(resources, image) == []
    assert {c["name"] for _, c in containers(resources)} == {"gateway", "trainer", "base-model"}


def test_a_container_that_may_run_as_root_is_caught(resources):
    image = image_user(DOCKERFILE.read_text())
    for change, expected in [
        (lambda pod, c: pod["securityContext"].pop("runAsNonRoot"), "gateway: pod runAsNonRoot is None"),
        (lambda pod, c: pod["securityContext"].update(runAsUser=0), "gateway: pod runAsUser is 0"),
        (lambda pod, c: pod["securityContext"].pop("fsGroup"), "gateway: pod fsGroup is None"),
        (lambda pod, c: c["securityContext"].update(runAsUser=0), "gateway: overrides the pod's user"),
        (lambda pod, c: c["securityContext"].pop("capabilities"), "gateway: capabilities are not drop ALL"),
        (lambda pod, c: c["securityContext"].update(readOnlyRootFilesystem=False), "gateway: the root filesystem"),
        (lambda pod, c: c["volumeMounts"].pop(), "gateway: nothing writable at /home/flywheel"),
    ]:
        broken = copy.deepcopy(resources)
        pod = find(broken, "Deployment", "flywheel-gateway")["spec"]["template"]["spec"]
        change(pod, pod["containers"][0])
        assert expected in "\n".join(security_problems(broken, image)), expected
    old = copy.deepcopy(resources)  # as the manifests were before: no user, only allowPrivilegeEscalation
    for pod, container in containers(old):
        pod.pop("securityContext", None)
        container["securityContext"] = {"allowPrivilegeEscalation": False}
    problems = security_problems(old, image)
    for name in ("gateway", "trainer", "base-model"):
        assert {f"{name}: pod runAsNonRoot is None, not True", f"{name}: the root filesystem is writable"} <= set(
            problems)
    find(old, "Namespace", "flywheel")["metadata"].pop("labels")
    assert "namespace: Pod Security 'restricted' is not enforced" in security_problems(old, image)
