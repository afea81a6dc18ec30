"""The bundle store: immutable, content-addressed directories under ``state_dir/bundles``.

Each bundle is ``<digest>/manifest.json`` plus its files. A bundle is written to a temporary
directory and renamed into place, so a reader never sees half a bundle.
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import BundleCompileError, BundleCorrupt, BundleNotFound
from .importer import Collected
from .manifest import Manifest, content_digest, file_sha256, rule_ids

Preflight = Callable[[Path, list[str]], tuple[str, str | None]]  # (dir, load order) -> (engine, error)


class BundleStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(
        self, collected: Collected, name: str, version: str, source: str, preflight: Preflight,
        plugins: list[str] | None = None,
    ) -> tuple[Manifest, bool]:
        """Store the bundle unless identical content is there; return (manifest, whether it is new)."""
        hashes = {path: file_sha256(data) for path, data in collected.files.items()}
        digest = content_digest(hashes)
        existing = self.root / digest
        if (existing / "manifest.json").is_file():
            return Manifest.from_file(existing / "manifest.json"), False
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            for rel, data in collected.files.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            engine, error = preflight(tmp, collected.load_order)
            if error:
                raise BundleCompileError(error.replace(str(tmp) + "/", ""))
            ids = sorted({i for rel in collected.load_order for i in rule_ids(collected.files[rel].decode("utf-8", "replace"))})
            manifest = Manifest(
                name=name, version=version, digest=digest, files=hashes, load_order=collected.load_order,
                rule_count=len(ids), rule_ids=ids, engine=engine, source=source,
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                excluded=collected.excluded, plugins=plugins or [],
            )
            (tmp / "manifest.json").write_text(manifest.to_json())
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, existing)
            except OSError:  # imported concurrently by someone else: theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
            return manifest, True
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def manifests(self) -> list[Manifest]:
        if not self.root.is_dir():
            return []
        out = []
        for entry in self.root.iterdir():
            if (entry / "manifest.json").is_file() and not entry.name.startswith("."):
                out.append(Manifest.from_file(entry / "manifest.json"))
        return sorted(out, key=lambda m: (m.name, m.version, m.created))

    def resolve(self, ref: str) -> Manifest:
        """``name@version``, a digest or a unique digest prefix (12+ characters), or a name (newest)."""
        candidates = self.manifests()
        if "@" in ref:
            found = [m for m in candidates if m.ref == ref]
        elif len(ref) >= 12 and all(c in "0123456789abcdef" for c in ref):
            found = [m for m in candidates if m.digest.startswith(ref)]
        else:
            found = sorted((m for m in candidates if m.name == ref), key=lambda m: m.created)[-1:]
        if not found:
            raise BundleNotFound(f"no bundle {ref!r} in {self.root}")
        if len(found) > 1:
            newest = max(found, key=lambda m: m.created)
            return newest
        return found[0]

    def path(self, manifest: Manifest) -> Path:
        return self.root / manifest.digest

    def verify(self, manifest: Manifest) -> None:
        """Raise BundleCorrupt unless every stored file matches the manifest."""
        base = self.path(manifest)
        problems = []
        for rel, sha in manifest.files.items():
            try:
                if file_sha256((base / rel).read_bytes()) != sha:
                    problems.append(f"{rel}: content changed")
            except OSError:
                problems.append(f"{rel}: missing")
        if content_digest(manifest.files) != manifest.digest:
            problems.append("manifest digest does not match its file list")
        if problems:
            raise BundleCorrupt(f"bundle {manifest.ref} ({manifest.digest[:12]}): " + "; ".join(problems))
