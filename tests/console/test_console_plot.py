"""The feedback plot's geometry: a correction bar beside each bucket's volume bar, and markers whose kind is the
one the move's recorded reason names (promoting an older version is a promote, not a rollback)."""

from __future__ import annotations

from adapters.version import AliasEvent
from feedback.timeline import Bucket
from server.console.plot import move_kind, plot

HOUR = 3600.0
T0 = 1_800_000_000.0


def event(from_version: int | None, to_version: int | None, reason: str, alias: str = "production") -> AliasEvent:
    return AliasEvent(1, "bot", alias, from_version, to_version, "console:ana", reason, T0 + HOUR / 2)


def test_corrections_are_drawn_beside_volume_on_the_same_scale() -> None:
    buckets = [Bucket(start=T0, completions=4, up=2, down=2, corrections=2),
               Bucket(start=T0 + HOUR, completions=4, up=4, down=0, corrections=0)]
    drawn = plot(buckets, [], 1, "hour")
    assert len(drawn.bars) == 2 and len(drawn.corrections) == 1  # no bar for a bucket without corrections
    volume, corrections = drawn.bars[0], drawn.corrections[0]
    assert corrections.x == round(volume.x + volume.width, 1)  # beside its bucket's volume bar
    assert corrections.height == round(volume.height / 2, 1)  # 2 of a peak of 4
    assert corrections.y + corrections.height == drawn.bottom
    assert "2 corrections" in corrections.title


def test_the_marker_kind_is_the_recorded_one() -> None:
    assert move_kind(event(3, 1, "promote: v1 answers better")) == "promote"  # older version, promoted
    assert move_kind(event(1, 3, "rollback: v3 was restored")) == "rollback"
    assert move_kind(event(2, 1, "rollback to v1")) == "rollback"  # the admin API's and CLI's default
    assert move_kind(event(2, 1, "Promote")) == "promote"
    assert move_kind(event(2, 1, "users complain")) == "rollback"  # no kind recorded: by version order
    assert move_kind(event(1, 2, "canary not worse: ...")) == "promote"
    assert move_kind(event(2, None, "canary worse: ...", alias="canary")) == "rollback"  # the canary taken away
    assert move_kind(event(2, None, "promoted v2", alias="canary")) == "promote"
    buckets = [Bucket(start=T0, completions=1, up=1, down=0, corrections=0)]
    (marker,) = plot(buckets, [event(3, 1, "promote: v1 answers better")], 1, "hour").markers
    assert marker.label == "promote" and "v3 -> v1 by console:ana" in marker.title
