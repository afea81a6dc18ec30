"""What changed between two bundles: rule ids added, removed and changed (with messages), and CRS
setup variables (``setvar:tx.*`` in active ``crs-setup.conf`` lines) that changed."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import Manifest

_ID = re.compile(r"""\bid\s*:\s*['"]?(\d+)""")
_MSG = re.compile(r"""\bmsg\s*:\s*'((?:[^'\\]|\\.)*)'""")
_SETVAR = re.compile(r"""setvar\s*:\s*'?tx\.([A-Za-z0-9_]+)=([^,'"]*)""")


@dataclass
class RuleInfo:
    digest: str
    message: str


@dataclass
class BundleDiff:
    added: dict[int, str] = field(default_factory=dict)
    removed: dict[int, str] = field(default_factory=dict)
    changed: dict[int, str] = field(default_factory=dict)
    setup: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.setup)


def _directives(text: str) -> list[str]:
    """Logical directives: continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        out.append(current + stripped)
        current = ""
    if current:
        out.append(current)
    return out


def rules_of(bundle_dir: Path, manifest: Manifest) -> dict[int, RuleInfo]:
    rules: dict[int, RuleInfo] = {}
    for rel in manifest.load_order:
        last_id = None
        for directive in _directives((bundle_dir / rel).read_text(errors="replace")):
            found = _ID.search(directive)
            if found and directive.startswith(("SecRule", "SecAction")):
                last_id = int(found.group(1))
                msg = _MSG.search(directive)
                rules[last_id] = RuleInfo(hashlib.sha256(directive.encode()).hexdigest(), msg.group(1) if msg else "")
            elif last_id is not None and directive.startswith("SecRule"):  # a chained rule belongs to its head
                head = rules[last_id]
                head.digest = hashlib.sha256((head.digest + directive).encode()).hexdigest()
    return rules


def setup_vars(bundle_dir: Path, manifest: Manifest) -> dict[str, str]:
    path = bundle_dir / "crs-setup.conf"
    if "crs-setup.conf" not in manifest.files or not path.is_file():
        return {}
    out = {}
    for directive in _directives(path.read_text(errors="replace")):
        for name, value in _SETVAR.findall(directive):
            out[name.lower()] = value
    return out


def diff(a_dir: Path, a: Manifest, b_dir: Path, b: Manifest) -> BundleDiff:
    ra, rb = rules_of(a_dir, a), rules_of(b_dir, b)
    out = BundleDiff()
    for rid in sorted(rb.keys() - ra.keys()):
        out.added[rid] = rb[rid].message
    for rid in sorted(ra.keys() - rb.keys()):
        out.removed[rid] = ra[rid].message
    for rid in sorted(ra.keys() & rb.keys()):
        if ra[rid].digest != rb[rid].digest:
            out.changed[rid] = rb[rid].message
    sa, sb = setup_vars(a_dir, a), setup_vars(b_dir, b)
    for name in sorted(sa.keys() | sb.keys()):
        if sa.get(name) != sb.get(name):
            out.setup[name] = (sa.get(name), sb.get(name))
    return out
