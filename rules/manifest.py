"""A bundle's manifest and its content digest.

The digest (format 2) is the sha256 of a header line, the sorted ``path NUL sha256 LF`` lines of
every file and the ``load NUL path LF`` lines of the load order, so identical content imports to the
same digest wherever and whenever it is imported, and an unsigned bundle's load order cannot be
changed without changing its digest. Format 1 (files only) is what bundles imported before it
carry; they still verify.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_RULE_ID = re.compile(r"""\bid\s*:\s*['"]?(\d+)""")


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


DIGEST_FORMAT = 2


def content_digest(files: dict[str, str], load_order: list[str] | None = None) -> str:
    """Digest of a file set given as {relative path: sha256}, with the load order (format 2) or
    without it (format 1, when ``load_order`` is None)."""
    lines = "".join(f"{path}\0{sha}\n" for path, sha in sorted(files.items()))
    if load_order is not None:
        lines = "edgeward-bundle-digest 2\n" + lines + "".join(f"load\0{rel}\n" for rel in load_order)
    return hashlib.sha256(lines.encode()).hexdigest()


def rule_ids(text: str) -> list[int]:
    return [int(m) for m in _RULE_ID.findall(text)]


@dataclass
class Manifest:
    name: str
    version: str
    digest: str
    files: dict[str, str]  # relative path -> sha256
    load_order: list[str]  # .conf files in the order the engine loads them
    rule_count: int
    rule_ids: list[int]
    engine: str
    source: str
    created: str
    excluded: dict[str, str] = field(default_factory=dict)  # file -> why it was left out
    plugins: list[str] = field(default_factory=list)
    digest_format: int = 1  # 2: the digest covers the load order too

    def expected_digest(self) -> str:
        return content_digest(self.files, self.load_order if self.digest_format >= 2 else None)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Manifest:
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(**data)
