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
from .stages import RULE_SETS, StageConfigError, build_stages
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


class RuntimeProblems(Exception):
    """Stages that could not be built: (config location, problem) pairs."""

    def __init__(self, problems: list[tuple[tuple[object, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))


def compile_runtime(config: Config, generation: int) -> Runtime:
    """Build everything a request needs; raise RuntimeProblems if a stage cannot be built."""
    entries: list[tuple[str, Domain]] = []
    problems: list[tuple[tuple[object, ...], str]] = []
    for d, domain_cfg in enumerate(config.domains):
        try:
            domain = _domain(config, domain_cfg)
        except _RouteError as exc:
            loc: tuple[object, ...] = ("domains", d) if exc.route is None else ("domains", d, "routes", exc.route)
            problems.append(((*loc, exc.key), exc.message))
            continue
        entries.extend((host, domain) for host in domain_cfg.hosts)
    if problems:
        raise RuntimeProblems(problems)
    RULE_SETS.retain(_rule_set_keys(entries))  # type: ignore[arg-type]
    return Runtime(
        config=config,
        generation=generation,
        hosts=HostTable(entries),
        client_ip=ClientIPResolver(config.trusted_proxies),
        unknown_host_status=config.unknown_host.status,
        unknown_host_body=config.unknown_host.body.encode(),
        max_header_size=config.limits.max_header_size,
    )


class _RouteError(Exception):
    def __init__(self, route: int | None, key: str, message: str) -> None:
        self.route, self.key, self.message = route, key, message


def _rule_set_keys(entries: list[tuple[str, Domain]]) -> set[tuple[str, object]]:
    keys = set()
    for _, domain in entries:
        for route in domain.routes.all():
            for stage in route.pipeline.stages:
                compiled = getattr(stage, "compiled", None)
                if compiled is not None:
                    keys.add((stage.bundle_digest, compiled.policy))  # type: ignore[attr-defined]
    return keys


def _domain(config: Config, cfg: DomainConfig) -> Domain:
    name = cfg.hosts[0]
    pool = UpstreamPool.from_config(cfg.upstream)
    try:
        default = _route(config, cfg, RouteConfig(path="/"), name, pool)
    except StageConfigError as exc:
        raise _RouteError(None, exc.key, str(exc)) from exc
    routes = []
    for i, r in enumerate(cfg.routes):
        try:
            routes.append((r.path, _route(config, cfg, r, name, UpstreamPool.from_config(r.upstream) if r.upstream else pool)))
        except StageConfigError as exc:
            raise _RouteError(i, exc.key, str(exc)) from exc
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


def runtime_problems(config: Config) -> list[tuple[tuple[object, ...], str]]:
    """A ``configfile.load_config`` check: can every stage be built from this config?"""
    try:
        compile_runtime(config, 0)
    except RuntimeProblems as exc:
        return exc.problems
    return []
