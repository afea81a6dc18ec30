"""Pipeline stages: thin adapters from the protection libraries to the request pipeline.

``build_stages`` lists them explicitly and in order (cheap rejections first, the WAF last before
the proxy), like mitmproxy's ``default_addons()``. The list is empty until the protections land.
"""
from __future__ import annotations

from ..config import Config, DomainConfig, RouteConfig
from ..pipeline import Stage


def build_stages(config: Config, domain: DomainConfig, route: RouteConfig) -> tuple[Stage, ...]:
    """The stages of one route, compiled from its merged policy at config load."""
    return ()
