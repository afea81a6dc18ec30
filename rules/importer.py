"""Collect a rule set from a directory into a normalised file set.

Layouts understood:
- Debian's ``/usr/share/modsecurity-crs``: its ``owasp-crs.load`` names what Apache/nginx include
  (``crs-setup.conf`` from ``/etc/modsecurity/crs``, the rules, the operator's 900/999 exclusion
  files); those includes are followed.
- A CRS release tree: ``crs-setup.conf`` (or ``.example``) and ``rules/``.
- Any directory of ``.conf`` files (an operator's own rules).

Normalised paths: ``crs-setup.conf`` and ``rules/<file>``; ``.conf`` files load in that order
(setup first, then rules sorted by name, which is CRS's own numbering).
"""
from __future__ import annotations

import glob
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleSourceError

MAX_FILE_BYTES = 16 * 1024 * 1024
_INCLUDE = re.compile(r"^\s*Include(Optional)?\s+(\S+)", re.MULTILINE)
_CRS_VERSION = re.compile(r"OWASP_CRS/(\d+\.\d+\.\d+)")

# Files of CRS that the engine cannot compile, and why Edgeward can do without them.
ENGINE_GAPS = {
    "REQUEST-910-IP-REPUTATION.conf": (
        "@geoLookup",
        "needs GeoIP/MaxMind support, which the libmodsecurity wheel lacks; "
        "Edgeward's own GeoIP and access-list stage replaces it",
    ),
}


@dataclass
class Collected:
    files: dict[str, bytes] = field(default_factory=dict)
    load_order: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)

    def add(self, rel: str, path: Path) -> None:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BundleSourceError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        name = path.name
        gap = ENGINE_GAPS.get(name)
        data = path.read_bytes()
        if gap and gap[0].encode() in data:
            self.excluded[rel] = gap[1]
            return
        self.files[rel] = data

    def finish(self) -> Collected:
        setup = ["crs-setup.conf"] if "crs-setup.conf" in self.files else []
        rules = sorted(p for p in self.files if p.startswith("rules/") and p.endswith(".conf"))
        self.load_order = setup + rules
        if not self.load_order:
            raise BundleSourceError("no .conf rule files found")
        return self

    def version(self) -> str | None:
        found = Counter(
            m for path in self.load_order for m in _CRS_VERSION.findall(self.files[path].decode("utf-8", "replace"))
        )
        return found.most_common(1)[0][0] if found else None


def collect_directory(source: Path) -> Collected:
    if not source.is_dir():
        raise BundleSourceError(f"{source}: not a directory")
    out = Collected()
    load = source / "owasp-crs.load"
    if load.is_file():
        for optional, pattern in _INCLUDE.findall(load.read_text()):
            matches = sorted(glob.glob(pattern if pattern.startswith("/") else str(source / pattern)))
            if not matches and not optional:
                raise BundleSourceError(f"{load}: included file {pattern} does not exist")
            for match in matches:
                path = Path(match)
                rel = "crs-setup.conf" if path.name.startswith("crs-setup.conf") else f"rules/{path.name}"
                out.add(rel, path)
                for data in path.parent.glob("*.data"):
                    out.add(f"rules/{data.name}", data)
        return out.finish()
    rules_dir = source / "rules" if (source / "rules").is_dir() else source
    for setup in ("crs-setup.conf", "crs-setup.conf.example"):
        if (source / setup).is_file():
            out.add("crs-setup.conf", source / setup)
            break
    for path in sorted(rules_dir.iterdir()):
        if path.is_file() and path.suffix in (".conf", ".data") and not path.name.startswith("crs-setup.conf"):
            out.add(f"rules/{path.name}", path)
    return out.finish()
