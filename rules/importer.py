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

import fnmatch
import glob
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .archive import download, is_archive, unpack
from .confine import outside_references
from .errors import BundleSourceError

MAX_FILE_BYTES = 16 * 1024 * 1024
_INCLUDE = re.compile(r"^\s*Include(Optional)?\s+(\S+)", re.MULTILINE)
_CRS_VERSION = re.compile(r"OWASP_CRS/(\d+\.\d+\.\d+)")

# Files of CRS that Edgeward leaves out of a bundle, and why it can do without them.
ENGINE_GAPS = {
    "REQUEST-910-IP-REPUTATION.conf": (
        "@geoLookup",
        "IP reputation through the engine's GeoIP database and DNS blocklist (@rbl) lookups, which "
        "would block a worker on DNS; Edgeward's own GeoIP and access-list stage replaces it",
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
        """Load order as CRS 4 defines it: setup, plugin config, plugin before-rules, the rules,
        plugin after-rules, then the operator's extra files."""
        setup = ["crs-setup.conf"] if "crs-setup.conf" in self.files else []
        confs = sorted(p for p in self.files if p.endswith(".conf"))
        plugins = [p for p in confs if p.startswith("plugins/")]
        order = (
            setup
            + [p for p in plugins if p.endswith("-config.conf")]
            + [p for p in plugins if p.endswith("-before.conf")]
            + [p for p in confs if p.startswith("rules/")]
            + [p for p in plugins if p.endswith("-after.conf")]
            + [p for p in confs if p.startswith("extra/")]
        )
        self.load_order = order
        if not [p for p in order if p != "crs-setup.conf"]:
            raise BundleSourceError("no .conf rule files found")
        return self

    def filter(self, include: list[str], exclude: list[str]) -> Collected:
        """Keep files matching any ``include`` glob (all when none) and no ``exclude`` glob. A glob
        matches the stored path (``rules/REQUEST-942-*.conf``) or the file name alone
        (``REQUEST-942-*``); one that matches no file is an error, never a silent no-op."""
        unused = [g for g in include + exclude if not any(_matches(rel, g) for rel in self.files)]
        if unused:
            raise BundleSourceError(
                f"--include/--exclude pattern(s) match no file: {', '.join(unused)} "
                f"(files look like {', '.join(sorted(self.files)[:3])})")
        for rel in list(self.files):
            if (include and not any(_matches(rel, g) for g in include)) or any(_matches(rel, g) for g in exclude):
                del self.files[rel]
                self.excluded[rel] = "left out by --include/--exclude"
        return self

    def version(self) -> str | None:
        found = Counter(
            m for path in self.load_order for m in _CRS_VERSION.findall(self.files[path].decode("utf-8", "replace"))
        )
        return found.most_common(1)[0][0] if found else None


def _matches(rel: str, pattern: str) -> bool:
    return fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pattern)


def collect(
    source: str, workdir: Path, *, sha256: str | None = None, include: list[str] | None = None,
    exclude: list[str] | None = None, plugins: list[str] | None = None, extras: list[str] | None = None,
) -> tuple[Collected, list[str]]:
    """Collect a bundle from a directory, an archive or a pinned https:// URL, with plugins and the
    operator's extra rule files; return it with the plugin names. ``workdir`` is scratch space."""
    root = _materialise(source, workdir / "source", sha256)
    # An archive or a download is confined to itself; a local directory is the operator's own
    # choice, and Debian's owasp-crs.load includes /etc/modsecurity/crs/ on purpose.
    out = collect_directory(root, finish=False, confined=root.is_relative_to(workdir))
    plugin_names = []
    for i, plugin in enumerate(plugins or []):
        plugin_root = _materialise(plugin, workdir / f"plugin{i}", None)
        found = sorted(plugin_root.rglob("*.conf")) + sorted(plugin_root.rglob("*.data"))
        if not any(p.name.endswith(("-config.conf", "-before.conf", "-after.conf")) for p in found):
            raise BundleSourceError(f"{plugin}: no CRS plugin files (*-config.conf, *-before.conf, *-after.conf)")
        for path in found:
            out.add(f"plugins/{path.name}", path)
        plugin_names.append(plugin_root.name)
    for extra in extras or []:
        path = Path(extra)
        if not path.is_file() or path.suffix != ".conf":
            raise BundleSourceError(f"{extra}: --extra takes a .conf file")
        out.add(f"extra/{path.name}", path)
    out.filter(include or [], exclude or [])
    problems = outside_references(out.files)
    if problems:
        raise BundleSourceError("the bundle names files outside itself:\n  " + "\n  ".join(problems))
    return out.finish(), plugin_names


def _materialise(source: str, scratch: Path, sha256: str | None) -> Path:
    if source.startswith(("https://", "http://")):
        scratch.mkdir(parents=True)
        source = str(download(source, sha256, scratch))
        scratch = scratch / "unpacked"
    path = Path(source)
    if is_archive(path):
        scratch.mkdir(parents=True, exist_ok=True)
        return unpack(path, scratch)
    if path.is_dir():
        return path
    raise BundleSourceError(f"{source}: not a directory, a .tar.gz/.tgz/.tar/.zip archive or an https:// URL")


def collect_directory(source: Path, finish: bool = True, confined: bool = False) -> Collected:
    """``confined``: what ``owasp-crs.load`` includes must lie inside ``source`` (archives)."""
    if not source.is_dir():
        raise BundleSourceError(f"{source}: not a directory")
    out = Collected()
    exported = source / "manifest.json"
    if exported.is_file():  # a bundle made by `edgeward bundle export`: take its files as they are
        try:
            files = json.loads(exported.read_text())["files"]
        except (ValueError, KeyError) as exc:
            raise BundleSourceError(f"{exported}: not a bundle manifest") from exc
        for rel in files:
            path = (source / rel).resolve()
            if not path.is_relative_to(source.resolve()):
                raise BundleSourceError(f"{exported}: {rel} points outside the bundle")
            out.files[rel] = path.read_bytes()
        return out.finish() if finish else out
    load = source / "owasp-crs.load"
    if load.is_file():
        for optional, pattern in _INCLUDE.findall(load.read_text()):
            matches = sorted(glob.glob(pattern if pattern.startswith("/") else str(source / pattern)))
            if not matches and not optional:
                raise BundleSourceError(f"{load}: included file {pattern} does not exist")
            for match in matches:
                path = Path(match)
                if confined and not path.resolve().is_relative_to(source.resolve()):
                    raise BundleSourceError(f"{load.name}: {pattern} names a file outside the archive ({match})")
                rel = "crs-setup.conf" if path.name.startswith("crs-setup.conf") else f"rules/{path.name}"
                out.add(rel, path)
                for data in path.parent.glob("*.data"):
                    out.add(f"rules/{data.name}", data)
        return out.finish() if finish else out
    rules_dir = source / "rules" if (source / "rules").is_dir() else source
    for setup in ("crs-setup.conf", "crs-setup.conf.example"):
        if (source / setup).is_file():
            out.add("crs-setup.conf", source / setup)
            break
    for path in sorted(rules_dir.iterdir()):
        if path.is_file() and path.suffix in (".conf", ".data") and not path.name.startswith("crs-setup.conf"):
            out.add(f"rules/{path.name}", path)
    return out.finish() if finish else out
