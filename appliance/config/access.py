"""The ``access`` section of domains and routes, and the top-level ``geoip`` section (the access
stage's schema)."""
from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import field_validator

from appliance.config.types import FilePath, Strict


class GeoIPConfig(Strict):
    database: FilePath  # a MaxMind DB with countries (GeoLite2-Country, GeoIP2-Country or -City)


class AccessConfig(Strict):
    allow_ips: list[str] = []  # when set, only these addresses and networks pass
    deny_ips: list[str] = []
    allow_countries: list[str] = []  # when set, only clients located in these countries pass
    deny_countries: list[str] = []
    unknown_country: Literal["allow", "deny"] = "allow"  # an address the database has no country for
    status: Literal[403, 404, 451] = 403

    @field_validator("allow_ips", "deny_ips")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(str(value), strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
        return [str(v) for v in values]

    @field_validator("allow_countries", "deny_countries")
    @classmethod
    def _countries(cls, values: list[str]) -> list[str]:
        for value in values:
            if not (isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha()):
                raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 country code such as DE")
        return [v.upper() for v in values]
