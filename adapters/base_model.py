"""What the registry needs to know about the base model, read from safetensors headers (no torch)."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """Return the tensor table of a safetensors file: name -> {dtype, shape, data_offsets}.

    Raises ValueError when the file is not a readable safetensors file.
    """
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > 100 * 1024 * 1024:
            raise ValueError(f"{path.name} has an implausible safetensors header ({header_len} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path.name} has a corrupt safetensors header: {e}") from None
    header.pop("__metadata__", None)
    return header


@dataclass(frozen=True)
class BaseModelInfo:
    """Linear modules of the base model with their weight shapes, and a fingerprint of the whole."""

    path: Path
    fingerprint: str
    linear_shapes: dict[str, tuple[int, ...]] = field(repr=False)

    @property
    def module_suffixes(self) -> set[str]:
        """Last path component of every 2-D weight (`q_proj`, `down_proj`, ...): what LoRA can target."""
        return {name.rsplit(".", 1)[-1] for name in self.linear_shapes}

    @classmethod
    def from_dir(cls, path: Path) -> BaseModelInfo:
        """Read every `*.safetensors` header under `path`; raise FileNotFoundError/ValueError if unusable."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in base model directory {path}")
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in base model directory {path}")
        digest = hashlib.sha256((path / "config.json").read_bytes())
        shapes: dict[str, tuple[int, ...]] = {}
        for file in files:
            for name, meta in sorted(read_safetensors_header(file).items()):
                digest.update(f"{name}:{meta['dtype']}:{meta['shape']}".encode())
                if name.endswith(".weight") and len(meta["shape"]) == 2:
                    shapes[name.removesuffix(".weight")] = tuple(meta["shape"])
        return cls(path=path, fingerprint=digest.hexdigest()[:16], linear_shapes=shapes)
