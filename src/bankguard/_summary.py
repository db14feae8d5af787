"""The one-screen summary printed by ``bankguard check-policy``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .policy import Policy


def _size(n: int) -> str:
    for unit, factor in (("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def summarise(policy: Policy) -> str:
    r = policy.request
    routes = policy.routes
    public = sum(1 for op in routes.operations if op.public)
    sink = policy.audit.sink if isinstance(policy.audit.sink, str) else repr(policy.audit.sink)
    proxies = ", ".join(str(n) for n in policy.trusted_proxies) or "none (forwarding headers ignored)"
    lines = [
        f"profile            {policy.profile}",
        f"trusted proxies    {proxies}",
        f"request   [{r.mode:7}] headers <= {_size(r.max_header_bytes)} (one field <= "
        f"{_size(r.max_header_field_bytes)}), body <= {_size(r.max_body_bytes)}, "
        f"target <= {_size(r.max_target_bytes)}; method overrides refused",
        f"routes    [{routes.mode:7}] {len(routes.operations)} operations ({public} public)"
        + (" in the policy, plus the OpenAPI spec's" if policy.openapi.spec is not None else "")
        + f"; undeclared: {routes.undeclared}",
    ]
    for op in routes.operations:
        needs = (
            " ".join(op.scopes) + (f" one of ({' '.join(op.any_scopes)})" if op.any_scopes else "")
        ).strip()
        note = "  (public)" if op.public else (f"  scopes: {needs}" if needs else "  token")
        lines.append(f"            {op.method:7} {op.path}{note}")
    lines += [
        f"auth      [{policy.auth.mode:7}] one Authorization header, scheme + token68; "
        f"tokens in query/form refused; realm={policy.auth.realm!r}",
        f"interaction id [{policy.interaction_id.mode:7}] header {policy.interaction_id.header}; "
        f"invalid ids: {policy.interaction_id.invalid}",
        f"responses          Cache-Control: {policy.response_headers.cache_control}"
        + ("; X-Content-Type-Options: nosniff" if policy.response_headers.nosniff else ""),
        f"audit              sink {sink} (logger {policy.audit.logger})",
        f"problems           type URIs under {policy.problems.type_base}",
    ]
    c = policy.client_cert
    if c.source != "none":
        lines.append(
            f"client_cert [{c.mode:7}] source {c.source}"
            + (f" (header {c.header_name})" if c.header_name else "")
            + (f"; chain validated against {c.trust_anchors}" if c.trust_anchors else "; no chain validation")
            + (f"; identity {c.identity}" if c.identity != "none" else "")
            + ("; required" if c.required else "")
        )
    t = policy.tokens
    if not t.configured:
        lines.append("tokens             not configured (every operation must be public)")
        return "\n".join(lines)
    lines.append(
        f"tokens    [{t.mode:7}] leeway {t.leeway:g}s, iat skew {t.max_future_iat:g}s, "
        f"max {_size(t.max_token_bytes)}; sender-constrained only: "
        + ("yes" if t.require_sender_constraint else "no")
    )
    for issuer in t.issuers:
        source = next(
            (f"{name} {getattr(issuer, name)}" if name != "jwks" else "inline jwks")
            for name in ("jwks_uri", "discovery", "jwks_file", "jwks", "hmac_secret_env")
            if getattr(issuer, name)
        )
        lines.append(f"            issuer {issuer.issuer} [{' '.join(issuer.algorithms)}] keys: {source}")
    if t.introspection is not None:
        lines.append(f"            introspection {t.introspection.endpoint} ({t.introspection.auth})")
    d = policy.dpop
    if d.enabled:
        nonce = (
            f"nonces (lifetime {d.nonce.lifetime:g}s, key from {d.nonce.secret_env})"
            if d.nonce.enabled
            else "no nonces"
        )
        lines.append(
            f"dpop               algs {' '.join(d.algorithms)}; "
            f"iat window -{d.max_age:g}s/+{d.future_skew:g}s; "
            f"{nonce}; htu origins {', '.join(str(o) for o in policy.external_origins)}"
        )
    o = policy.openapi
    if o.spec is not None:
        lines.append(
            f"openapi   [{o.mode:7}] requests validated against {o.spec}; responses {o.responses.mode}"
            f" (buffer <= {_size(o.responses.max_body_bytes)}), undeclared fields stripped"
            + ("; card numbers masked" if o.minimise.mask_pan else "")
            + ("; scopes from the spec" if o.scopes_from_spec else "")
        )
    rl = policy.ratelimit
    if rl.enabled:
        tiers = "; ".join(f"{name} {tier.limits}" for name, tier in rl.tiers)
        lines.append(
            f"ratelimit [{rl.mode:7}] {rl.strategy} per verified TPP: {tiers}"
            + (f"; {len(rl.operations)} operation override(s)" if rl.operations else "")
            + (f"; pre-auth {rl.preauth.limits} per address" if rl.preauth.limits else "")
            + (
                f"; unattended {rl.unattended.limit} per {rl.unattended.period:g}s"
                if rl.unattended.enabled
                else ""
            )
            + f"; store failure fails {rl.on_storage_failure}"
        )
    shared = "shared by every worker" if policy.storage.shared else "this process only"
    lines.append(f"storage            {_redacted(policy.storage.uri)} ({shared})")
    return "\n".join(lines)


def _redacted(uri: str) -> str:
    """A storage URI without its password."""
    scheme, sep, rest = uri.partition("://")
    if "@" not in rest:
        return uri
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':' if user else ''}***@{host}"
