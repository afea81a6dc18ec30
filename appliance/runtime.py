"""A config compiled for the hot path: the resolve stage, route pipelines, the done consumers.

Built once per config generation; a request takes one reference to it at its start, so a reload
swaps the reference and requests in flight finish on the generation they began with. Stages are
started before a generation serves and closed after its last in-flight request has ended.
"""
from __future__ import annotations

import asyncio
import logging

from cc.geoip import GeoIPError

from appliance.config.schema import Config, DomainConfig, RouteConfig
from appliance.localredis import limiter_settings
from appliance.pipeline.clientip import ClientIPResolver
from appliance.pipeline.route import Domain, Route
from appliance.pipeline.routing import HostTable, RouteTable
from appliance.pipeline.runner import Pipeline
from appliance.stages import Shared, Site, StageConfigError, build_done_stages, build_route_stages
from appliance.stages.resolve import Resolve
from appliance.upstream.pool import UpstreamPool
from appliance.upstream.transport import Timeouts

log = logging.getLogger("edgeward.runtime")


class Runtime:
    """One configuration generation. ``enter``/``leave`` count the requests it serves."""

    def __init__(self, config: Config, generation: int, shared: Shared, resolve: Resolve, done: Pipeline,
                 routes: list[Route]) -> None:
        self.config = config
        self.generation = generation
        self.shared = shared
        self.resolve = resolve
        self.done = done
        self.routes = routes
        self.inflight = 0
        self._retired = False
        self._closed: asyncio.Future[None] | None = None

    def _pipelines(self) -> list[Pipeline]:
        unique: dict[int, Pipeline] = {id(self.done): self.done}
        for route in self.routes:
            unique.setdefault(id(route.pipeline), route.pipeline)
        return list(unique.values())

    async def start(self) -> None:
        """Start every stage; on a failure, close what started and raise."""
        started: list[Pipeline] = []
        try:
            await self.resolve.start()
            for pipeline in self._pipelines():
                await pipeline.start()
                started.append(pipeline)
        except BaseException:
            for pipeline in started:
                await pipeline.close()
            raise

    def retire(self) -> None:
        """No new requests will come; close the stages once the last in-flight one has left."""
        self._retired = True
        if self.inflight == 0:
            self._schedule_close()

    def leave(self) -> None:
        self.inflight -= 1
        if self._retired and self.inflight == 0:
            self._schedule_close()

    def _schedule_close(self) -> None:
        if self._closed is None:
            self._closed = asyncio.ensure_future(self.close())

    async def close(self) -> None:
        for pipeline in self._pipelines():
            await pipeline.close()
        await self.resolve.close()
        log.debug("config generation %d closed", self.generation)

    async def closed(self) -> None:
        if self._closed is not None:
            await self._closed


class RuntimeProblems(Exception):
    """Stages that could not be built: (config location, problem) pairs."""

    def __init__(self, problems: list[tuple[tuple[object, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))


def compile_runtime(config: Config, generation: int, shared: Shared | None = None) -> Runtime:
    """Build everything a request needs; raise RuntimeProblems if a stage cannot be built."""
    shared = shared or Shared()
    try:
        shared.open_geoip(config.geoip.database if config.geoip else None)
    except GeoIPError as exc:
        raise RuntimeProblems([(("geoip", "database"), str(exc))]) from exc
    shared.use_redis(limiter_settings(config))
    done = Pipeline(build_done_stages(config, shared))
    entries: list[tuple[str, Domain]] = []
    routes: list[Route] = []
    problems: list[tuple[tuple[object, ...], str]] = []
    for d, domain_cfg in enumerate(config.domains):
        try:
            domain = _domain(config, domain_cfg, shared, done)
        except _RouteError as exc:
            loc: tuple[object, ...] = ("domains", d) if exc.route is None else ("domains", d, "routes", exc.route)
            problems.append(((*loc, exc.key), exc.message))
            continue
        entries.extend((host, domain) for host in domain_cfg.hosts)
        routes.extend(domain.routes.all())
    if problems:
        raise RuntimeProblems(problems)
    shared.rule_sets.retain({
        (stage.bundle_digest, stage.compiled.policy)  # type: ignore[attr-defined]
        for route in routes for stage in route.pipeline.stages if hasattr(stage, "compiled")
    })
    resolve = Resolve(HostTable(entries), ClientIPResolver(config.trusted_proxies), config.unknown_host.status,
                      config.unknown_host.body.encode(), config.limits.max_header_size)
    return Runtime(config, generation, shared, resolve, done, routes)


class _RouteError(Exception):
    def __init__(self, route: int | None, key: str, message: str) -> None:
        self.route, self.key, self.message = route, key, message


def _domain(config: Config, cfg: DomainConfig, shared: Shared, done: Pipeline) -> Domain:
    name = cfg.hosts[0]
    pool = UpstreamPool.from_config(cfg.upstream)
    try:
        default = _route(config, cfg, RouteConfig(path="/"), name, pool, shared, done)
    except StageConfigError as exc:
        raise _RouteError(None, exc.key, str(exc)) from exc
    routes = []
    for i, r in enumerate(cfg.routes):
        try:
            upstream = UpstreamPool.from_config(r.upstream) if r.upstream else pool
            routes.append((r.path, _route(config, cfg, r, name, upstream, shared, done)))
        except StageConfigError as exc:
            raise _RouteError(i, exc.key, str(exc)) from exc
    return Domain(name, RouteTable(routes, default))


def _route(config: Config, domain: DomainConfig, cfg: RouteConfig, name: str, pool: UpstreamPool,
           shared: Shared, done: Pipeline) -> Route:
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
        pipeline=(pipeline := Pipeline(build_route_stages(Site(config, domain, cfg, shared)))),
        finish=pipeline.done_stages + done.done_stages,
        identity=config.identity_headers.names(),
    )


def runtime_problems(config: Config) -> list[tuple[tuple[object, ...], str]]:
    """A ``config.loader.load_config`` check: can every stage be built from this config?"""
    try:
        compile_runtime(config, 0)
    except RuntimeProblems as exc:
        return exc.problems
    return []
