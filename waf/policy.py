"""What a domain or route asks of the WAF, independent of the config file's shape.

Frozen and hashable: the compiler shares one compiled rule set among every domain and route whose
(bundle, policy) pair is equal, so memory grows with distinct policies, not with domains.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["block", "detect", "off"]


@dataclass(frozen=True)
class Exclusion:
    """Remove rules (by id or tag), or one target from them, optionally only under a path prefix
    and for some methods; compiled to CRS-style rules."""

    rules: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    target: str | None = None  # e.g. "ARGS:q", "REQUEST_COOKIES:session"
    path: str | None = None
    methods: tuple[str, ...] = ()
    name: str | None = None  # a named exclusion counts the requests it applied to (Outcome.exclusions)


@dataclass(frozen=True)
class Policy:
    mode: Mode = "block"
    paranoia: int = 1  # blocking paranoia level
    detection_paranoia: int | None = None  # rules above `paranoia` up to this level only log
    inbound_threshold: int = 5
    outbound_threshold: int = 4
    allowed_methods: tuple[str, ...] | None = None  # None: the bundle's default
    allowed_content_types: tuple[str, ...] | None = None
    body_limit: int = 13107200
    body_limit_action: Literal["reject", "inspect_partial"] = "reject"
    inspect_response: bool = False
    response_body_limit: int = 524288
    pcre_match_limit: int = 100000
    arguments_limit: int = 1000
    json_depth_limit: int = 512
    exclusions: tuple[Exclusion, ...] = field(default=())
    directives: str = ""

    @property
    def detection_level(self) -> int:
        return max(self.paranoia, self.detection_paranoia or self.paranoia)
