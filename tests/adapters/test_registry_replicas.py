"""Registry writes decide on what the write transaction reads: another replica's change made after a caller
looked, but before its write began, is seen. Each test runs on SQLite and on PostgreSQL.

`meanwhile` makes the other replica act at exactly that moment: when the first one opens its write
transaction, before the transaction begins.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.errors import AliasMoved, Conflict
from adapters.registry import Registry
from tests.lora_factory import write_lora, write_tiny_base


@pytest.fixture
def replicas(tmp_path: Path, store_location) -> tuple[Registry, Registry]:
    base_dir = write_tiny_base(tmp_path / "base")
    base = BaseModelInfo.from_dir(base_dir)
    location = store_location("registry.db")
    one, two = (Registry(location, tmp_path / "adapters", base, max_rank=8) for _ in range(2))
    for seed in (1, 2, 3):
        one.register("bot", write_lora(tmp_path / f"a{seed}", base_dir, seed=seed))
    one.promote("bot", 1)
    return one, two


def meanwhile(registry: Registry, other_replica_acts: Callable[[], object]) -> None:
    """Run `other_replica_acts` once, when `registry` next opens a write transaction."""
    write, pending = registry.db.write, [other_replica_acts]

    @contextmanager
    def write_after_them():
        while pending:
            pending.pop()()
        with write() as conn:
            yield conn

    registry.db.write = write_after_them


def test_a_version_another_replica_marked_broken_meanwhile_is_not_aliased(replicas) -> None:
    one, two = replicas
    meanwhile(one, lambda: two.mark_broken("bot", 2, "weights changed on disk"))
    with pytest.raises(Conflict, match=r"bot@2 is broken \(weights changed on disk\)"):
        one.promote("bot", 2)
    assert one.alias_version("bot", "production") == 1
    assert [e.to_version for e in one.history("bot")] == [1]


def test_metrics_another_replica_merged_meanwhile_are_kept(replicas) -> None:
    one, two = replicas
    meanwhile(one, lambda: two.set_metrics("bot", 2, {"gate": {"passed": True}}))
    one.set_metrics("bot", 2, {"canary_up_rate": 0.8})
    assert two.get_version("bot", 2).metrics == {"gate": {"passed": True}, "canary_up_rate": 0.8}


def test_a_move_expecting_where_the_alias_was_is_refused_once_it_moved(replicas) -> None:
    one, two = replicas
    meanwhile(one, lambda: two.promote("bot", 2, actor="bob"))
    with pytest.raises(AliasMoved, match="production is at v2, not at v1 as expected") as e:
        one.promote("bot", 3, actor="alice", expected=1)
    assert (e.value.expected, e.value.current) == (1, 2)
    assert one.alias_version("bot", "production") == 2
    assert one.set_alias("bot", "production", 3, expected=2).to_version == 3  # where it is now: moves
    with pytest.raises(AliasMoved, match="staff is at nothing, not at v1"):
        one.set_alias("bot", "staff", 2, expected=1)
    assert one.set_alias("bot", "staff", 2, expected=None).from_version is None


def test_a_promote_expecting_the_candidate_it_saw_is_refused_once_another_replica_moved_it(replicas) -> None:
    one, two = replicas
    one.set_alias("bot", "candidate", 2)  # what the operator saw
    meanwhile(one, lambda: two.set_alias("bot", "candidate", 3, actor="trainer"))
    with pytest.raises(AliasMoved, match="candidate is at v3, not at v2 as expected") as e:
        one.promote("bot", 2, actor="alice", expected=1, expected_candidate=2)
    assert (e.value.alias, e.value.expected, e.value.current) == ("candidate", 2, 3)
    assert one.alias_version("bot", "production") == 1
    assert [e.to_version for e in one.history("bot", "production")] == [1]
    assert one.promote("bot", 3, expected=1, expected_candidate=3).to_version == 3  # the one there now: moves
    with pytest.raises(AliasMoved, match="candidate is at v3, not at nothing"):
        one.promote("bot", 2, expected_candidate=None)
