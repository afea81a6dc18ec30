"""The bundle store: immutable, content-addressed directories under ``state_dir/bundles``.

Each bundle is ``<digest>/manifest.json`` plus its files. A bundle is written to a temporary
directory and renamed into place, so a reader never sees half a bundle.

References (``name@version``) live in ``refs.json``, one list of digests per reference (newest last),
written under a lock. Importing content that is already stored under another name adds that name
as an alias of the same digest, and concurrent imports each keep the reference they reported.
"""
from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BundleCompileError, BundleCorrupt, BundleNotFound
from .importer import Collected
from .manifest import DIGEST_FORMAT, Manifest, content_digest, file_sha256, rule_ids

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
        digest = content_digest(hashes, collected.load_order)
        existing = self.root / digest
        if (existing / "manifest.json").is_file():
            return self._named(Manifest.from_file(existing / "manifest.json"), name, version), False
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
                excluded=collected.excluded, plugins=plugins or [], digest_format=DIGEST_FORMAT,
            )
            (tmp / "manifest.json").write_text(manifest.to_json())
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, existing)
            except OSError:  # imported concurrently by someone else: theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
                return self._named(Manifest.from_file(existing / "manifest.json"), name, version), False
            self._add_ref(manifest.ref, digest)
            return manifest, True
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # -- references -------------------------------------------------------------------------
    @contextmanager
    def _refs_locked(self) -> Iterator[dict[str, list[str]]]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "refs.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            refs = self._refs()
            yield refs
            tmp = self.root / f"refs.json.tmp{os.getpid()}"
            tmp.write_text(json.dumps(refs, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.root / "refs.json")

    def _refs(self) -> dict[str, list[str]]:
        try:
            data = json.loads((self.root / "refs.json").read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise BundleCorrupt(f"{self.root / 'refs.json'}: unreadable ({exc})") from exc
        return {str(k): [str(d) for d in v] for k, v in data.items()} if isinstance(data, dict) else {}

    def _add_ref(self, ref: str, digest: str) -> None:
        with self._refs_locked() as refs:
            digests = refs.setdefault(ref, [])
            if digest in digests:
                digests.remove(digest)
            digests.append(digest)

    def _named(self, manifest: Manifest, name: str, version: str) -> Manifest:
        """``manifest`` under the reference this import asked for (an alias of the same digest)."""
        self._add_ref(f"{name}@{version}", manifest.digest)
        return dataclasses.replace(manifest, name=name, version=version)

    def forget(self, digests: set[str]) -> None:
        """Drop references to removed bundles (garbage collection)."""
        with self._refs_locked() as refs:
            for ref in list(refs):
                refs[ref] = [d for d in refs[ref] if d not in digests]
                if not refs[ref]:
                    del refs[ref]

    def manifests(self) -> list[Manifest]:
        """Every reference with its bundle (an alias is listed under its own name)."""
        if not self.root.is_dir():
            return []
        stored: dict[str, Manifest] = {}
        for entry in self.root.iterdir():
            if (entry / "manifest.json").is_file() and not entry.name.startswith("."):
                m = Manifest.from_file(entry / "manifest.json")
                stored[m.digest] = m
        out = list(stored.values())
        for ref, digests in self._refs().items():
            name, _, version = ref.rpartition("@")
            for digest in digests:
                target = stored.get(digest)
                if target is not None and target.ref != ref:
                    out.append(dataclasses.replace(target, name=name, version=version))
        return sorted(out, key=lambda m: (m.name, m.version, m.created))

    def resolve(self, ref: str) -> Manifest:
        """``name@version``, a digest or a unique digest prefix (12+ characters), or a name (newest)."""
        candidates = self.manifests()
        if "@" in ref:
            latest = self._refs().get(ref, [])[-1:]  # the newest import under this reference
            found = [m for m in candidates if m.ref == ref and m.digest in latest] or [
                m for m in candidates if m.ref == ref]
        elif len(ref) >= 12 and all(c in "0123456789abcdef" for c in ref):
            found = [m for m in candidates if m.digest.startswith(ref)]
            matched = {m.digest for m in found}
            if len(matched) == 1:  # one bundle, perhaps under several names: its own manifest
                return Manifest.from_file(self.root / matched.pop() / "manifest.json")
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

    @contextmanager
    def verified_copy(self, manifest: Manifest) -> Iterator[Path]:
        """A private copy of the bundle's files, each checked against the manifest as it is copied,
        so what gets compiled is exactly what was verified (no window in which a file in the store
        can change between the check and the engine reading it). Removed on exit."""
        base = self.path(manifest)
        if manifest.expected_digest() != manifest.digest:
            raise BundleCorrupt(f"bundle {manifest.ref} ({manifest.digest[:12]}): manifest digest does not match")
        with tempfile.TemporaryDirectory(prefix="edgeward-compile-") as tmp:
            os.chmod(tmp, 0o700)
            for rel, sha in manifest.files.items():
                try:
                    data = (base / rel).read_bytes()
                except OSError as exc:
                    raise BundleCorrupt(f"bundle {manifest.ref} ({manifest.digest[:12]}): {rel}: missing") from exc
                if file_sha256(data) != sha:
                    raise BundleCorrupt(f"bundle {manifest.ref} ({manifest.digest[:12]}): {rel}: content changed")
                target = Path(tmp) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            yield Path(tmp)

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
        if manifest.expected_digest() != manifest.digest:
            problems.append("manifest digest does not match its file list and load order")
        missing = [rel for rel in manifest.load_order if rel not in manifest.files]
        if missing:
            problems.append(f"load order names files the bundle lacks: {', '.join(missing)}")
        if problems:
            raise BundleCorrupt(f"bundle {manifest.ref} ({manifest.digest[:12]}): " + "; ".join(problems))
