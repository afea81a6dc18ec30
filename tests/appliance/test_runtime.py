"""Compiled rule sets are shared: memory grows with distinct (bundle, policy) pairs, not domains."""
from __future__ import annotations

from pathlib import Path

from appliance.config.loader import load_config
from appliance.runtime import compile_runtime
from appliance.stages import Shared


def test_domains_with_equal_policies_share_one_compiled_rule_set(tmp_path: Path, crs_state: Path) -> None:
    domains = "".join(
        f"  - hosts: [d{i}.test]\n    upstream: http://127.0.0.1:9\n    waf: {{mode: block, paranoia: 2}}\n"
        for i in range(20)
    )
    domains += ("  - hosts: [other.test]\n    upstream: http://127.0.0.1:9\n    waf: {mode: block}\n"
                "    routes:\n      - {path: /api, waf: {mode: detect}}\n      - {path: /x, waf: {paranoia: 2}}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {crs_state}\ndomains:\n{domains}")
    shared = Shared()
    runtime = compile_runtime(load_config(cfg), 1, shared)
    compiled = {}
    for i in range(20):
        stage = runtime.resolve.hosts.lookup(f"d{i}.test").routes.lookup("/").pipeline.stages[0]  # type: ignore[union-attr]
        compiled[id(stage.compiled)] = stage.compiled  # type: ignore[attr-defined]
    assert len(compiled) == 1  # twenty domains, one rule set
    other = runtime.resolve.hosts.lookup("other.test")
    assert other is not None
    default, api, x = (other.routes.lookup(p).pipeline.stages[0].compiled for p in ("/", "/api", "/x"))  # type: ignore[attr-defined]
    assert api is not default and api.policy.mode == "detect"
    assert x is next(iter(compiled.values()))  # route /x has the same policy as the d*.test domains
    assert len(shared.rule_sets) == 3  # paranoia 2, paranoia 1, detect
