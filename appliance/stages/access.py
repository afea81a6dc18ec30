"""The access stage: IP/CIDR and country allow and deny lists, before every costlier stage.

Order, as in nginx's allow/deny with an exception list first: an address in ``allow_ips`` passes
this stage whatever else is listed (a partner's network inside a denied country); one in
``deny_ips`` is refused; then the country lists decide. "Only these networks" is
``allow_ips: [...]`` with ``deny_ips: [0.0.0.0/0, "::/0"]``. The client address is the one the
resolve stage settled on (X-Forwarded-For only from trusted proxies).
"""
from __future__ import annotations

from typing import ClassVar

from cc.geoip import CountryDB
from cc.iplist import IPList

from appliance.config.access import AccessConfig
from appliance.pipeline.context import RequestContext
from appliance.pipeline.stage import Stage
from appliance.pipeline.verdict import Verdict


def locate(ctx: RequestContext, geoip: CountryDB | None) -> str | None:
    """The client's country, looked up once per request (the audit record reuses it)."""
    if ctx.country is None and geoip is not None:
        ctx.country = geoip.country(ctx.client_ip)
    return ctx.country


class AccessStage(Stage):
    name: ClassVar[str] = "access"
    section: ClassVar[str | None] = "access"
    schema = AccessConfig

    def __init__(self, cfg: AccessConfig, geoip: CountryDB | None) -> None:
        self.allow = IPList(cfg.allow_ips) if cfg.allow_ips else None
        self.deny = IPList(cfg.deny_ips) if cfg.deny_ips else None
        self.allow_countries = frozenset(cfg.allow_countries)
        self.deny_countries = frozenset(cfg.deny_countries)
        self.by_country = bool(self.allow_countries or self.deny_countries)
        self.unknown_denied = cfg.unknown_country == "deny"
        self.geoip = geoip
        self.status = cfg.status

    def _refuse(self, reason: str) -> Verdict:
        return Verdict(self.status, reason)

    async def request_headers(self, ctx: RequestContext) -> Verdict | None:
        ip = ctx.client_ip
        if self.allow is not None and ip in self.allow:
            return None
        if self.deny is not None and ip in self.deny:
            return self._refuse("access.ip_denied")
        if self.by_country:
            country = locate(ctx, self.geoip)
            if country is None:
                return self._refuse("access.country_unknown") if self.unknown_denied else None
            if self.allow_countries and country not in self.allow_countries:
                return self._refuse("access.country_not_allowed")
            if country in self.deny_countries:
                return self._refuse("access.country_denied")
        return None
