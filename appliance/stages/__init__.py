"""Pipeline stages: thin adapters from the protection libraries to the request pipeline.

The stage lists are explicit and ordered, like mitmproxy's ``default_addons()``: ``resolve`` first,
then the route's stages with cheap rejections before expensive ones (access, cc, authn as they
land; the WAF last before the proxy), and the ``done`` consumers every request reaches. Each route
stage reads its own config section, merged route-over-domain by ``merge_section``.
"""
from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from authn.consumers import BasicCredential, Consumer, KeyCredential, Registry
from authn.hmacauth import HigressHmac, HmacAuth, HmacCredential, MessageSignatures
from authn.jwks import JWKSCache
from authn.jwtauth import JwtAuth, JwtSettings, StaticKey
from authn.oidc import OidcFlows
from authn.oidc import Provider as OidcProvider
from authn.oidc import Settings as OidcSettings
from cc.challenge import Challenges, load_key
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cc.geoip import CountryDB
from cc.keys import KeyPart, KeySpec
from cc.store import Limiter, Rule
from limits import parse as parse_limit
from pydantic import BaseModel
from rules.errors import BundleError
from waf.compiler import RuleSetCache
from waf.errors import WafCompileError

from appliance.bundles import canary_for, check_bundle, resolve_for_domain, store_for
from appliance.consumers import ConsumerError, all_consumers
from appliance.exclusions import ExclusionError, for_domain
from appliance.config.schema import Config, DomainConfig, RouteConfig
from appliance.config.access import AccessConfig
from appliance.config.authn import AuthConfig, JwtMethodConfig
from appliance.config.cc import CCConfig
from appliance.config.waf import WafConfig
from appliance.observe.metrics import WorkerMetrics
from appliance.pipeline.stage import Stage, merge_section
from appliance.stages.access import AccessStage
from appliance.stages.accesslog import AccessLogStage
from appliance.stages.audit import AuditStage
from appliance.stages.authn import AuthnBodyStage, AuthnStage
from appliance.stages.oidc import OidcStage
from appliance.stages.cc import CCStage
from appliance.stages.canary import Canary, CanaryStats
from appliance.stages.metrics import MetricsStage
from appliance.stages.waf import EngineThreads, WafStage, policy_of


@dataclass(slots=True)
class Shared:
    """What one worker process keeps across config generations (never module globals): compiled
    rule sets shared by equal policies, the threads that run long engine calls, canary statistics
    and request metrics."""

    rule_sets: RuleSetCache = field(default_factory=RuleSetCache)
    engine: EngineThreads = field(default_factory=EngineThreads)
    canary: CanaryStats = field(default_factory=CanaryStats)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    geoip: CountryDB | None = None  # the config's geoip.database, kept open across generations
    limiter: Limiter | None = None  # the CC stage's Redis pool and fallback state
    registry: tuple[int, Registry] | None = None  # the consumers of one config (by its identity)
    jwks: dict[str, JWKSCache] = field(default_factory=dict)  # by URL, kept across generations
    oidc_providers: dict[str, OidcProvider] = field(default_factory=dict)  # by issuer: discovery and keys kept

    def registry_for(self, config: Config) -> Registry:
        """The config's consumers and credentials, built once per config."""
        if self.registry is None or self.registry[0] != id(config):
            self.registry = (id(config), registry_of(config))
        return self.registry[1]

    def use_redis(self, settings: dict[str, Any] | None) -> None:
        """Keep the limiter (and its pool) while the Redis settings stay the same."""
        if settings is None:
            self.limiter = None
        elif self.limiter is None or self.limiter.settings != settings:
            self.limiter = Limiter(**settings)

    def open_geoip(self, path: Path | None) -> None:
        """Open the configured database (or keep the one already open); GeoIPError when it
        cannot be read, and the one in use stays."""
        if path is None:
            self.geoip = None
        elif self.geoip is None or self.geoip.path != path:
            self.geoip = CountryDB(path)


class StageConfigError(Exception):
    """A stage cannot be built from its config (``key`` is the config path below the route)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Site:
    """Where a route stage is being built: the whole config, the domain and the route."""

    config: Config
    domain: DomainConfig
    route: RouteConfig
    shared: Shared


def _waf(cfg: WafConfig, site: Site) -> Stage | None:
    if cfg.mode == "off":
        return None
    config, host = site.config, site.domain.hosts[0]
    try:
        manifest, _ = resolve_for_domain(config.state_dir, cfg.bundle, host, config.rules)
        policy = policy_of(cfg)
        managed = for_domain(config.state_dir, site.domain)  # made from audit records
        if managed:
            policy = replace(policy, exclusions=policy.exclusions + managed)
        store = store_for(config.state_dir)
        compiled = site.shared.rule_sets.get(manifest.digest, lambda: store.verified_copy(manifest),
                                             manifest.load_order, policy)
        canary = None
        found = canary_for(config.state_dir, host, cfg.bundle)
        if found is not None and found[0].digest != manifest.digest:
            cand, _, scope = found
            check_bundle(config.state_dir, cand, config.rules)
            shadow = site.shared.rule_sets.get(cand.digest, lambda: store.verified_copy(cand), cand.load_order,
                                               replace(policy, mode="block"))
            canary = Canary(shadow, site.shared.canary, scope, cand.ref, cand.digest, manifest.ref)
    except (BundleError, WafCompileError, ExclusionError) as exc:
        raise StageConfigError("waf", str(exc)) from exc
    return WafStage(compiled, f"{manifest.ref}#{manifest.digest[:12]}", manifest.digest, canary, site.shared.engine)


def _access(cfg: AccessConfig, site: Site) -> Stage | None:
    if not (cfg.allow_ips or cfg.deny_ips or cfg.allow_countries or cfg.deny_countries):
        return None
    if (cfg.allow_countries or cfg.deny_countries) and site.shared.geoip is None:
        raise StageConfigError("access", "country lists need a GeoIP database (geoip.database at the top level)")
    return AccessStage(cfg, site.shared.geoip)


def _rules(cfg: CCConfig, site: Site, consumer: bool) -> list[Rule]:
    """The section's rules keyed (``consumer``) or not by the consumer. A rule's id depends on
    the domain and the rule, not on the route: routes that inherit a domain's rule share its
    counters, and so do nodes with the same config."""
    out = []
    for i, r in enumerate(cfg.rules):
        key = KeySpec(tuple(KeyPart.parse(p) for p in r.key), r.ipv4_prefix, r.ipv6_prefix)
        if key.uses_consumer != consumer:
            continue
        fallback = (KeySpec(tuple(KeyPart.parse(p) for p in r.fallback_key), r.ipv4_prefix, r.ipv6_prefix)
                    if r.fallback_key else None)
        item = parse_limit(r.limit)
        name = r.name or f"rule-{i + 1}"
        identity = f"{site.domain.hosts[0]}|{name}|{r.key}|{r.limit}|{r.algorithm}|{r.burst}|{r.ipv4_prefix}|{r.ipv6_prefix}"
        out.append(Rule(name, hashlib.sha256(identity.encode()).hexdigest()[:12], key, fallback, r.algorithm,
                        item.amount, float(item.get_expiry()), r.burst or (item.amount if r.algorithm == "gcra" else 1),
                        r.ban_after, r.ban_for, r.ban_window, r.on_redis_error, r.action))
    return out


def _cc(cfg: CCConfig | None, site: Site) -> Stage | None:
    """Throttles not keyed by the consumer, and the bans, on every route once the node has a
    limiter (a ban made with ``edgeward cc ban`` holds on every domain)."""
    limiter = site.shared.limiter
    if limiter is None or not site.config.uses_cc():  # Redis only for HMAC replays: no CC stage
        return None
    rules = _rules(cfg, site, False) if cfg else []
    return CCStage(rules, limiter, cfg.bad_behavior if cfg else None, challenges=_challenges(cfg, rules, site))


def _challenges(cfg: CCConfig | None, rules: list[Rule], site: Site) -> Challenges | None:
    if cfg is None or all(r.action == "reject" for r in rules):
        return None
    key = load_key(site.config.state_dir / "keys" / "challenge.key")  # one per node: copy it to share passes
    return Challenges(key, cfg.challenge.pass_for, cfg.challenge.difficulty)


def _cc_consumer(cfg: CCConfig, site: Site) -> Stage | None:
    """Throttles keyed by the consumer: after authentication, which names it."""
    rules = _rules(cfg, site, True)
    if not rules or site.shared.limiter is None:
        return None
    return CCStage(rules, site.shared.limiter, check_bans=False, challenges=_challenges(cfg, rules, site))


def registry_of(config: Config) -> Registry:
    """The config file's consumers and the managed ones (``edgeward consumer add``)."""
    consumers, keys, basics = [], [], []
    secrets: dict[str, tuple[Consumer, bytes]] = {}
    try:
        declared = all_consumers(config)
    except ConsumerError as exc:
        raise StageConfigError("auth", str(exc)) from exc
    for c in declared:
        consumer = Consumer(c.name, tuple(c.groups))
        consumers.append(consumer)
        for cred in c.credentials:
            if cred.type == "hmac":
                secrets[cred.key_id] = (consumer, _hmac_secret(cred.key_id, cred.secret_env, cred.secret_file, config))
                continue
            expires = cred.expires.timestamp() if cred.expires is not None else None
            if cred.type == "key":
                keys.append(KeyCredential(consumer, bytes.fromhex(cred.sha256), expires))
            else:
                basics.append(BasicCredential(consumer, cred.username, cred.scrypt, expires))
    return Registry(consumers, keys, basics, secrets)


def _hmac_secret(key_id: str, env: str | None, file: str | None, config: Config) -> bytes:
    """From the environment, or from a file nobody but the appliance's user can read."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise StageConfigError("auth", f"consumers: hmac key {key_id!r}: the environment has no {env}")
        return value.encode()
    path = Path(file or "")
    try:
        if path.stat().st_mode & 0o077:
            raise StageConfigError("auth", f"consumers: hmac key {key_id!r}: {path} is readable by others (chmod 600)")
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise StageConfigError("auth", f"consumers: hmac key {key_id!r}: cannot read {path} ({exc.strerror})") from exc
    if not secret:
        raise StageConfigError("auth", f"consumers: hmac key {key_id!r}: {path} is empty")
    return secret


def _authn(cfg: AuthConfig, site: Site) -> Stage | None:
    if not cfg.enabled:
        return None
    if not cfg.methods:  # checked once merged: a route may set only allow and take its domain's methods
        raise StageConfigError("auth", "needs methods (key, basic, jwt, hmac, oidc), or auth: off")
    if "oidc" in cfg.methods:
        return _oidc(cfg, site)
    registry = site.shared.registry_for(site.config)
    if "jwt" not in cfg.methods:  # a JWT names subjects of its own; the other methods only declared consumers
        known = set(registry.consumers) | {g for c in registry.consumers.values() for g in c.groups}
        unknown = [name for name in cfg.allow if name not in known]
        if unknown:
            raise StageConfigError("auth.allow", f"no consumer or group {unknown[0]!r}")
    jwt = None
    if "jwt" in cfg.methods:
        if cfg.jwt is None:
            raise StageConfigError("auth.jwt", "the jwt method needs auth.jwt (keys or jwks_url)")
        if "key" in cfg.methods and cfg.key.bearer:
            raise StageConfigError("auth.key.bearer", "a bearer token cannot be both an API key and a JWT")
        jwt = JwtAuth(site.shared.registry_for(site.config), _jwt_settings(cfg.jwt, site.shared))
    hmac: HmacAuth | HigressHmac | MessageSignatures | None = None
    if "hmac" in cfg.methods:
        limiter = site.shared.limiter
        remember = limiter.remember if limiter is not None else None
        credentials = {key_id: HmacCredential(consumer, key_id, secret) for key_id, (consumer, secret) in registry.hmac.items()}
        h = cfg.hmac
        if h.format == "higress":
            hmac = HigressHmac(credentials, h.clock_skew, h.signed_headers, h.validate_body, remember)
        elif h.format == "rfc9421":
            hmac = MessageSignatures(credentials, h.clock_skew, h.signed_headers, h.validate_body, remember)
        else:
            hmac = HmacAuth(credentials, h.clock_skew, h.signed_headers, h.validate_body, h.algorithms, remember)
    # X-Ca signs form fields; RFC 9421 checks a content-digest whenever one is sent
    body = hmac is not None and (cfg.hmac.validate_body or cfg.hmac.format != "apisix")
    cls = AuthnBodyStage if body else AuthnStage
    return cls(cfg, registry, jwt, hmac)


def _oidc(cfg: AuthConfig, site: Site) -> Stage:
    """OpenID Connect: alone on a route (a browser session or a provider's access token)."""
    if cfg.methods != ["oidc"] or cfg.oidc is None:
        raise StageConfigError("auth.oidc", "the oidc method goes alone, with auth.oidc (issuer, client_id, client_secret_env)")
    o = cfg.oidc
    secret = os.environ.get(o.client_secret_env)
    if not secret:
        raise StageConfigError("auth.oidc.client_secret_env", f"the environment has no {o.client_secret_env}")
    key = base64.urlsafe_b64encode(load_key(site.config.state_dir / "keys" / "oidc-session.key"))
    settings = OidcSettings(o.issuer, o.client_id, secret, list(o.scopes), o.redirect_path, o.logout_path,
                            o.post_logout_redirect_uri, o.session_lifetime, o.session_idle, o.cookie_name, key,
                            o.bearer_only, o.introspection, list(o.userinfo_claims))
    provider = site.shared.oidc_providers.setdefault(o.issuer, OidcProvider(o.issuer))
    redis = None
    if o.session_store == "redis":
        if site.shared.limiter is None:
            raise StageConfigError("auth.oidc.session_store", "redis sessions need redis: (or the node's private redis-server)")
        redis = site.shared.limiter.redis
    return OidcStage(cfg, o, OidcFlows(settings, provider), site.shared.registry_for(site.config), redis)


def _jwt_settings(cfg: JwtMethodConfig, shared: Shared) -> JwtSettings:
    keys = []
    for i, k in enumerate(cfg.keys):
        if k.secret_env is not None:
            secret = os.environ.get(k.secret_env)
            if not secret:
                raise StageConfigError(f"auth.jwt.keys[{i}].secret_env", f"the environment has no {k.secret_env}")
            keys.append(StaticKey(k.kid, k.algorithm, secret.encode()))
        else:
            try:
                public = load_pem_public_key((k.public_key or "").encode())
            except ValueError as exc:
                raise StageConfigError(f"auth.jwt.keys[{i}].public_key", f"not a PEM public key ({exc})") from exc
            keys.append(StaticKey(k.kid, k.algorithm, public))
    jwks = None
    if cfg.jwks_url is not None:
        jwks = shared.jwks.setdefault(cfg.jwks_url, JWKSCache(cfg.jwks_url))
    return JwtSettings(keys, jwks, tuple(cfg.jwks_algorithms), tuple(cfg.issuers), tuple(cfg.audiences), cfg.leeway,
                       tuple(cfg.required_claims), cfg.consumer_claim, dict(cfg.claims_to_headers),
                       b"authorization" if cfg.header else None, cfg.query.encode() if cfg.query else None,
                       cfg.cookie.encode() if cfg.cookie else None)


Builder = Callable[[Any, Site], "Stage | None"]

# (stage class, builder from its merged section): the route stages, in the order they run.
ROUTE_STAGES: tuple[tuple[type[Stage], Builder], ...] = (
    (AccessStage, _access),
    (CCStage, _cc),
    (AuthnStage, _authn),
    (CCStage, _cc_consumer),  # after authentication, which names the consumer
    (WafStage, _waf),
)


_ALWAYS = frozenset({_cc})  # built on routes without the section too


def build_route_stages(site: Site) -> tuple[Stage, ...]:
    """The stages of one route, compiled from its merged sections at config load."""
    stages: list[Stage] = []
    for cls, build in ROUTE_STAGES:
        assert cls.section is not None
        section: BaseModel | None = merge_section(getattr(site.domain, cls.section), getattr(site.route, cls.section))
        stage = build(section, site) if section is not None or build in _ALWAYS else None
        if stage is not None:
            stages.append(stage)
    return tuple(stages)


def build_done_stages(config: Config, shared: Shared) -> tuple[Stage, ...]:
    """The global ``done`` consumers every request reaches, blocked or not."""
    stages: list[Stage] = [MetricsStage(shared.metrics)]
    if config.access_log.enabled:
        stages.append(AccessLogStage(config.access_log))
    if config.audit.enabled:
        stages.append(AuditStage(config.audit, config.state_dir, shared.geoip))
    return tuple(stages)
