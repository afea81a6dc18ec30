"""A bundle's manifest and its content digest.

The digest is the sha256 of the sorted ``path NUL sha256 LF`` lines of every file, so identical
content imports to the same digest wherever and whenever it is imported.
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


def content_digest(files: dict[str, str]) -> str:
    """Digest of a file set given as {relative path: sha256}."""
    lines = "".join(f"{path}\0{sha}\n" for path, sha in sorted(files.items()))
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

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Manifest:
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(**data)
