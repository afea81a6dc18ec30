"""What a request is routed to: a domain's route with its upstream pool, limits and pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.pipeline.routing import RouteTable
from appliance.pipeline.runner import Pipeline
from appliance.pipeline.stage import Stage

if TYPE_CHECKING:
    from appliance.upstream.pool import UpstreamPool
    from appliance.upstream.transport import Timeouts


IDENTITY = (b"x-consumer-username", b"x-consumer-groups", b"x-credential-identifier")


@dataclass(frozen=True, slots=True)
class Route:
    domain: str  # the domain's first host, its name in logs and metrics
    path: str
    pool: UpstreamPool
    timeouts: Timeouts
    max_body_size: int  # 0: no limit
    preserve_host: bool
    pipeline: Pipeline
    finish: tuple[Stage, ...]  # the done hooks every request on this route reaches: its own, then global ones
    identity: tuple[bytes, bytes, bytes] = IDENTITY  # the consumer's name, groups and credential, to the upstream


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    routes: RouteTable[Route]
