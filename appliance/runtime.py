"""A config compiled for the hot path: host and route tables, upstream pools, pipelines.

Built once per config generation; a request takes one reference to it at its start, so a reload
swaps the reference and requests in flight finish on the generation they began with.
"""
from __future__ import annotations

from dataclasses import dataclass

from .clientip import ClientIPResolver
from .config import Config, DomainConfig, RouteConfig
from .pipeline import Pipeline
from .routing import HostTable, RouteTable
from .stages import build_stages
from .transport import Timeouts
from .upstreams import UpstreamPool


@dataclass(frozen=True, slots=True)
class Route:
    domain: str  # the domain's first host, used as its name in logs and metrics
    path: str
    pool: UpstreamPool
    timeouts: Timeouts
    max_body_size: int  # 0: no limit
    preserve_host: bool
    pipeline: Pipeline


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    routes: RouteTable[Route]


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    generation: int
    hosts: HostTable[Domain]
    client_ip: ClientIPResolver
    unknown_host_status: int
    unknown_host_body: bytes
    max_header_size: int


def compile_runtime(config: Config, generation: int) -> Runtime:
    entries = []
    for domain_cfg in config.domains:
        domain = _domain(config, domain_cfg)
        entries.extend((host, domain) for host in domain_cfg.hosts)
    return Runtime(
        config=config,
        generation=generation,
        hosts=HostTable(entries),
        client_ip=ClientIPResolver(config.trusted_proxies),
        unknown_host_status=config.unknown_host.status,
        unknown_host_body=config.unknown_host.body.encode(),
        max_header_size=config.limits.max_header_size,
    )


def _domain(config: Config, cfg: DomainConfig) -> Domain:
    name = cfg.hosts[0]
    pool = UpstreamPool.from_config(cfg.upstream)
    default = _route(config, cfg, RouteConfig(path="/"), name, pool)
    routes = [
        (r.path, _route(config, cfg, r, name, UpstreamPool.from_config(r.upstream) if r.upstream else pool))
        for r in cfg.routes
    ]
    return Domain(name, RouteTable(routes, default))


def _route(config: Config, domain: DomainConfig, cfg: RouteConfig, name: str, pool: UpstreamPool) -> Route:
    t = cfg.timeouts or domain.timeouts or config.timeouts
    body_limit = next(
        v for v in (cfg.max_body_size, domain.max_body_size, config.limits.max_body_size) if v is not None
    )
    return Route(
        domain=name,
        path=cfg.path,
        pool=pool,
        timeouts=Timeouts(t.connect, t.read, t.total),
        max_body_size=body_limit,
        preserve_host=domain.preserve_host,
        pipeline=Pipeline(build_stages(config, domain, cfg)),
    )
