"""Pipeline stages: thin adapters from the protection libraries to the request pipeline.

``build_stages`` lists them explicitly and in order (cheap rejections first, the WAF last before
the proxy), like mitmproxy's ``default_addons()``. Compiled WAF rule sets are shared through one
process-wide cache keyed by (bundle digest, policy).
"""
from __future__ import annotations

from dataclasses import replace

from rules.errors import BundleError
from waf.compiler import RuleSetCache
from waf.errors import WafCompileError

from ..bundles import canary_for, check_bundle, resolve_for_domain
from ..config import Config, DomainConfig, RouteConfig
from ..pipeline import Stage
from .canary import Canary
from .waf import WafStage, merged, policy_of

RULE_SETS = RuleSetCache()


class StageConfigError(Exception):
    """A stage cannot be built from its config (``key`` is the config path below the route)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


def build_stages(config: Config, domain: DomainConfig, route: RouteConfig) -> tuple[Stage, ...]:
    """The stages of one route, compiled from its merged policy at config load."""
    stages: list[Stage] = []
    waf = merged(domain.waf, route.waf)
    if waf.mode != "off":
        try:
            manifest, path = resolve_for_domain(config.state_dir, waf.bundle, domain.hosts[0], config.rules)
            policy = policy_of(waf)
            compiled = RULE_SETS.get(manifest.digest, path, manifest.load_order, policy)
            canary = None
            found = canary_for(config.state_dir, domain.hosts[0], waf.bundle)
            if found is not None and found[0].digest != manifest.digest:
                cand, cand_path, scope = found
                check_bundle(config.state_dir, cand, config.rules)
                shadow = RULE_SETS.get(cand.digest, cand_path, cand.load_order, replace(policy, mode="block"))
                canary = Canary(shadow, scope, cand.ref, cand.digest, manifest.ref)
        except (BundleError, WafCompileError) as exc:
            raise StageConfigError("waf", str(exc)) from exc
        stages.append(WafStage(compiled, f"{manifest.ref}#{manifest.digest[:12]}", manifest.digest, canary))
    return tuple(stages)
