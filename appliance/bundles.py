"""Glue between the rules store and the WAF engine: import with an engine preflight, resolve the
bundle a domain uses, verify it before it is loaded.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rules.activation import GLOBAL, Activation, Activations
from rules.errors import BundleError
from rules.importer import collect
from rules.manifest import Manifest
from rules.signing import Signature, load_public_key, verify_signature
from rules.store import BundleStore
from waf.compiler import compile_rules, engine_version
from waf.errors import WafCompileError
from waf.policy import Policy

from appliance.config.schema import Config, RulesConfig


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


def import_bundle(
    state_dir: Path, source: Path | str, name: str | None = None, version: str | None = None, *,
    sha256: str | None = None, include: list[str] | None = None, exclude: list[str] | None = None,
    plugins: list[str] | None = None, extras: list[str] | None = None,
) -> ImportResult:
    """Import a directory, archive or pinned https:// URL; nothing is written to the store unless
    the whole bundle was read safely and compiles."""
    text = str(source)
    with tempfile.TemporaryDirectory(prefix="edgeward-import-") as work:
        collected, plugin_names = collect(text, Path(work), sha256=sha256, include=include, exclude=exclude,
                                          plugins=plugins, extras=extras)
        detected = collected.version()
        default_name = "crs" if detected else Path(text.rstrip("/").rsplit("/", 1)[-1]).name.split(".")[0] or "rules"
        manifest, new = store_for(state_dir).add(
            collected,
            name=name or default_name,
            version=version or detected or "0",
            source=text if "://" in text else str(Path(text).resolve()),
            preflight=preflight,
            plugins=plugin_names,
        )
    return ImportResult(manifest, new, collected.excluded)


def trusted_keys(rules: RulesConfig) -> list[bytes] | None:
    return [load_public_key(k) for k in rules.trusted_keys] if rules.trusted_keys else None


def check_bundle(state_dir: Path, manifest: Manifest, rules: RulesConfig) -> None:
    """Refuse a bundle whose files changed since import, or whose signature is missing (when
    required) or invalid (or by an untrusted key)."""
    store = store_for(state_dir)
    store.verify(manifest)
    verify_signature(store.path(manifest), trusted_keys(rules), rules.require_signature)


def resolve_for_domain(
    state_dir: Path, ref: str | None, domain: str | None = None, rules: RulesConfig | None = None
) -> tuple[Manifest, Path]:
    """The bundle a domain uses: pinned in config, else the domain's activation, else the global
    one. Verified against its manifest (a file changed on disk is refused) and its signature."""
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
    check_bundle(state_dir, manifest, rules or RulesConfig())
    return manifest, store.path(manifest)


def domain_scope(config: Config, host: object) -> str:
    """The activation scope a ``--domain`` names: the global one when absent, else the configured
    domain that has this host (any of its hosts, wildcards written as in the config), by its first
    host, so the activation applies to the whole domain. A host no domain has is an error, never a
    silently unused activation."""
    if not host:
        return GLOBAL
    if not isinstance(host, str):
        raise BundleError("domain must be a host name")
    name = host.strip().lower().rstrip(".")
    for domain in config.domains:
        if name in domain.hosts:
            return domain.hosts[0]
    known = ", ".join(d.hosts[0] for d in config.domains)
    raise BundleError(f"no configured domain has host {host!r} (domains: {known})")


def activate_bundle(config_state: Path, rules: RulesConfig, ref: str, scope: str, reason: str, by: str | None = None) -> tuple[Manifest, Activation]:
    """Verify (files and signature) and record the activation; workers switch within a second."""
    store = store_for(config_state)
    manifest = store.resolve(ref)
    check_bundle(config_state, manifest, rules)
    return manifest, activations_for(config_state).activate(manifest.digest, manifest.ref, scope, reason, by)


def verify_bundle(state_dir: Path, rules: RulesConfig, ref: str) -> tuple[Manifest, Signature | None]:
    store = store_for(state_dir)
    manifest = store.resolve(ref)
    store.verify(manifest)
    return manifest, verify_signature(store.path(manifest), trusted_keys(rules), rules.require_signature)


def canary_scope(scope: str) -> str:
    return f"canary@{scope}"


def canary_for(state_dir: Path, domain: str, pinned: str | None) -> tuple[Manifest, Path, str] | None:
    """The candidate bundle a domain runs beside its enforcing one: the domain's canary, else the
    global canary when the domain follows the global bundle (no pin, no activation of its own)."""
    activations = activations_for(state_dir)
    entry = activations.active(canary_scope(domain))
    scope = domain
    if entry is None and pinned is None and activations.active(domain) is None:
        entry, scope = activations.active(canary_scope(GLOBAL)), GLOBAL
    if entry is None:
        return None
    store = store_for(state_dir)
    manifest = store.resolve(entry.digest)
    return manifest, store.path(manifest), scope


def promote_canary(state_dir: Path, rules: RulesConfig, scope: str, reason: str, by: str | None = None) -> Manifest:
    """Make the scope's canary enforce, and end the canary."""
    activations = activations_for(state_dir)
    entry = activations.active(canary_scope(scope))
    if entry is None:
        raise BundleError(f"{scope}: no canary to promote")
    manifest, _ = activate_bundle(state_dir, rules, entry.digest, scope, reason or "promote canary", by)
    activations.activate("", "(none)", canary_scope(scope), "promoted", by)
    return manifest


def export_bundle(state_dir: Path, ref: str, out: Path | None = None) -> tuple[Path, Manifest]:
    """A tarball of the manifest, the files and the signature, which imports to the same digest."""
    store = store_for(state_dir)
    manifest = store.resolve(ref)
    store.verify(manifest)
    out = out or Path(f"{manifest.name}-{manifest.version}-{manifest.digest[:12]}.tar.gz")
    base = store.path(manifest)
    top = f"{manifest.name}-{manifest.version}"
    names = ["manifest.json", *sorted(manifest.files)] + (["signature.json"] if (base / "signature.json").exists() else [])
    with tarfile.open(out, "w:gz") as tar:
        for rel in names:
            tar.add(base / rel, arcname=f"{top}/{rel}", recursive=False)
    return out, manifest


def collect_garbage(config: Config, dry_run: bool = False) -> list[Manifest]:
    """Remove bundles that no activation history (any scope, canaries included) and no config pin uses."""
    store = store_for(config.state_dir)
    keep = activations_for(config.state_dir).referenced()
    pins = {d.waf.bundle for d in config.domains} | {r.waf.bundle for d in config.domains for r in d.routes if r.waf}
    for ref in pins - {None}:
        try:
            keep.add(store.resolve(str(ref)).digest)
        except BundleError:
            pass  # a pin that resolves to nothing keeps nothing
    removed = [m for m in store.manifests() if m.digest not in keep]
    if not dry_run:
        for digest in {m.digest for m in removed}:
            shutil.rmtree(store.root / digest, ignore_errors=True)
        store.forget({m.digest for m in removed})
    return removed
