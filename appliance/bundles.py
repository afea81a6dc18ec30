"""Glue between the rules store and the WAF engine: import with an engine preflight, resolve the
bundle a domain uses, verify it before it is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rules.activation import GLOBAL, Activations
from rules.errors import BundleError
from rules.importer import collect_directory
from rules.manifest import Manifest
from rules.store import BundleStore
from waf.compiler import compile_rules, engine_version
from waf.errors import WafCompileError
from waf.policy import Policy


@dataclass(frozen=True)
class ImportResult:
    manifest: Manifest
    new: bool
    excluded: dict[str, str]


def store_for(state_dir: Path) -> BundleStore:
    return BundleStore(state_dir / "bundles")


def activations_for(state_dir: Path) -> Activations:
    return Activations(state_dir / "bundles")


def preflight(directory: Path, load_order: list[str]) -> tuple[str, str | None]:
    """Compile with the running engine as a detect-mode policy; (engine, parser error or None)."""
    try:
        compile_rules(directory, load_order, Policy(mode="detect"))
    except WafCompileError as exc:
        return engine_version(), str(exc)
    return engine_version(), None


def import_bundle(state_dir: Path, source: Path, name: str | None = None, version: str | None = None) -> ImportResult:
    collected = collect_directory(source)
    detected = collected.version()
    manifest, new = store_for(state_dir).add(
        collected,
        name=name or ("crs" if detected else source.resolve().name),
        version=version or detected or "0",
        source=str(source.resolve()),
        preflight=preflight,
    )
    return ImportResult(manifest, new, collected.excluded)


def resolve_for_domain(state_dir: Path, ref: str | None, domain: str | None = None) -> tuple[Manifest, Path]:
    """The bundle a domain uses: pinned in config, else the domain's activation, else the global
    one. Verified against its manifest (a file changed on disk is refused)."""
    store = store_for(state_dir)
    if ref is None:
        activations = activations_for(state_dir)
        active = (activations.active(domain) if domain else None) or activations.active(GLOBAL)
        if active is None:
            raise BundleError(
                "no rule bundle is active (run: edgeward bundle import /usr/share/modsecurity-crs, "
                "then edgeward bundle activate crs@3.3.4)"
            )
        ref = active.digest
    manifest = store.resolve(ref)
    store.verify(manifest)
    return manifest, store.path(manifest)
