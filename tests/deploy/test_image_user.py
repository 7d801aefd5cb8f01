"""deploy/Dockerfile and deploy/compose.yaml run nothing as root.

No Docker here (and no network to pull a base image), so the image is not built in the tests: the Dockerfile is
read as Docker reads it (comments dropped, continuation lines joined) and checked for what makes it non-root:
its last USER is a numeric uid:gid other than 0 (Kubernetes' runAsNonRoot can check only a number), that uid is a
user the image creates, HOME is that user's home (vLLM's and Triton's caches go there), and the data directory
is owned by it before it becomes a VOLUME (Docker drops later changes to a volume path). Every compose service
names a non-root `user:`, Flywheel's the image's. Each checker also runs on a broken copy, so it can fail.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import yaml

from tests.deploy.conftest import DEPLOY

DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"


@dataclass(frozen=True)
class ImageUser:
    """Who the image runs as, and the paths that user must be able to write."""

    uid: int | None
    gid: int | None
    home: str | None
    data_dir: str | None


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, comments dropped and `\\` continuations joined."""
    found, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue  # Docker drops comment lines, also inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        found.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return found


def environment(steps: list[tuple[str, str]]) -> dict[str, str]:
    """The image's ENV variables (the `KEY=value ...` form)."""
    return dict(pair.split("=", 1) for keyword, args in steps if keyword == "ENV" for pair in shlex.split(args))


def created_user(steps: list[tuple[str, str]], uid: int) -> str | None:
    """The home directory of the user a RUN creates with `useradd --uid <uid>`, or None if none does."""
    for keyword, args in steps:
        match = re.search(rf"useradd\b[^&;|]*--uid {uid}\b[^&;|]*", args) if keyword == "RUN" else None
        if match:
            home = re.search(r"--home-dir (\S+)", match.group(0))
            return home.group(1) if home else f"/home/{match.group(0).split()[-1]}"
    return None


def image_user(text: str) -> ImageUser:
    """The uid:gid of the Dockerfile's last USER (None when absent or not numeric), its home and data dir."""
    steps = instructions(text)
    users = [args for keyword, args in steps if keyword == "USER"]
    match = re.fullmatch(r"(\d+):(\d+)", users[-1]) if users else None
    uid, gid = (int(match.group(1)), int(match.group(2))) if match else (None, None)
    env = environment(steps)
    return ImageUser(uid, gid, env.get("HOME"), env.get("FLYWHEEL_DATA_DIR"))


def image_problems(text: str) -> list[str]:
    """What makes the image run as root, or leaves its user unable to write its home or data directory."""
    steps = instructions(text)
    users = [args for keyword, args in steps if keyword == "USER"]
    user = image_user(text)
    if not users:
        return ["no USER: the image runs as root"]
    if user.uid is None:
        return [f"USER {users[-1]} is not a numeric uid:gid (runAsNonRoot cannot check a name)"]
    if user.uid == 0 or user.gid == 0:
        return [f"USER {users[-1]} is root"]
    problems = []
    home = created_user(steps, user.uid)
    if home is None:
        problems.append(f"no RUN creates a user with uid {user.uid} (useradd --uid)")
    elif user.home != home:
        problems.append(f"ENV HOME is {user.home}, not {home}, the user's home")
    if not any(k == "RUN" and re.search(rf"groupadd\b[^&;|]*--gid {user.gid}\b", a) for k, a in steps):
        problems.append(f"no RUN creates the group {user.gid} (groupadd --gid)")
    if user.data_dir is None:
        return [*problems, "no ENV FLYWHEEL_DATA_DIR"]
    owner = re.compile(rf"chown (-R )?{user.uid}:{user.gid} {re.escape(user.data_dir)}\b")
    owned = next((i for i, (k, a) in enumerate(steps) if k == "RUN" and owner.search(a)), None)
    volume = next((i for i, (k, a) in enumerate(steps) if k == "VOLUME" and user.data_dir in a), None)
    if owned is None:
        problems.append(f"{user.data_dir} is not chowned to {user.uid}:{user.gid}")
    elif volume is not None and volume < owned:
        problems.append(f"{user.data_dir} is chowned after VOLUME, which discards the change")
    return problems


def compose_problems(compose: dict, image: ImageUser) -> list[str]:
    """Compose services that may run as root; Flywheel's must be the image's user, without privileges."""
    problems = []
    for name, service in compose["services"].items():
        user = str(service.get("user", ""))
        match = re.fullmatch(r"(\d+):(\d+)", user)
        if not match or int(match.group(1)) == 0:  # group 0 alone is no root: Grafana's image uses 472:0
            problems.append(f"{name}: user {user!r} is not a non-root uid:gid")
        if "build" in service:
            if user != f"{image.uid}:{image.gid}":
                problems.append(f"{name}: user {user!r} is not the image's {image.uid}:{image.gid}")
            if service.get("cap_drop") != ["ALL"] or "no-new-privileges:true" not in service.get("security_opt", []):
                problems.append(f"{name}: keeps capabilities or may gain privileges")
            if not any(v.endswith(f":{image.data_dir}") for v in service.get("volumes", [])):
                problems.append(f"{name}: no volume at {image.data_dir}")
    return problems


def test_the_image_runs_as_its_own_non_root_user():
    text = DOCKERFILE.read_text()
    assert image_problems(text) == []
    assert image_user(text) == ImageUser(10001, 10001, "/home/flywheel", "/data")


def test_a_root_or_unowned_image_is_caught():
    text = DOCKERFILE.read_text()
    assert "USER 10001:10001\n" in text
    assert image_problems(text.replace("USER 10001:10001\n", "")) == ["no USER: the image runs as root"]
    assert "root" in image_problems(text.replace("USER 10001:10001", "USER 0:0"))[0]
    assert "not a numeric" in image_problems(text.replace("USER 10001:10001", "USER flywheel"))[0]
    assert "not chowned" in image_problems(text.replace("chown 10001:10001 /data", "chown root /data"))[0]
    moved = text.replace("VOLUME /data\n", "").replace("RUN mkdir -p /data", "VOLUME /data\nRUN mkdir -p /data")
    assert "after VOLUME" in image_problems(moved)[0]
    assert "uid 10001" in image_problems(text.replace("--uid 10001", "--uid 10002"))[0]
    assert "HOME" in image_problems(text.replace("HOME=/home/flywheel", "HOME=/root"))[0]


def test_instructions_join_continuations_and_drop_comments():
    steps = instructions("FROM x\n# a comment\nRUN a \\\n  # inside\n && b\nUSER 1:1\n")
    assert steps == [("FROM", "x"), ("RUN", "a && b"), ("USER", "1:1")]


def test_every_compose_service_runs_non_root():
    compose = yaml.safe_load(COMPOSE.read_text())
    image = image_user(DOCKERFILE.read_text())
    assert compose_problems(compose, image) == []
    assert compose["services"]["flywheel"]["user"] == "10001:10001"


def test_a_compose_service_as_root_is_caught():
    image = image_user(DOCKERFILE.read_text())
    for service, change, expected in [
        ("grafana", {"user": None}, "grafana: user ''"),
        ("prometheus", {"user": "0:0"}, "prometheus: user '0:0'"),
        ("flywheel", {"user": "10002:10002"}, "flywheel: user '10002:10002' is not the image's"),
        ("flywheel", {"cap_drop": None}, "flywheel: keeps capabilities"),
    ]:
        compose = yaml.safe_load(COMPOSE.read_text())
        compose["services"][service].update(change)
        compose["services"][service] = {k: v for k, v in compose["services"][service].items() if v is not None}
        assert any(p.startswith(expected) for p in compose_problems(compose, image)), (service, change)
