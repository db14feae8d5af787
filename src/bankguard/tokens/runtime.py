"""Build the token control's runtime objects from the policy (once, at start-up)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError
from ..policy_tokens import IssuerPolicy, TokensPolicy
from .jose import JoseError
from .jwt import IssuerRules, JwtVerifier, normalise_typ
from .keys import KeySource, StaticKeySource

log = logging.getLogger("bankguard")


def key_source(issuer: IssuerPolicy, path: str) -> KeySource:
    """The key source an issuer's policy names; problems with static keys are configuration errors."""
    allowed = frozenset(issuer.algorithms)
    try:
        if issuer.hmac_secret_env:
            secret = os.environ.get(issuer.hmac_secret_env, "").encode("utf-8")
            return StaticKeySource.from_secret(issuer.issuer, secret, allowed)
        if issuer.jwks is not None:
            source, skipped = StaticKeySource.from_jwks(issuer.issuer, dict(issuer.jwks), allowed)
            where = f"{path}.jwks"
        elif issuer.jwks_file is not None:
            source, skipped = StaticKeySource.from_file(issuer.issuer, issuer.jwks_file, allowed)
            where = f"{path}.jwks_file"
        else:
            from .jwks import RemoteKeySource

            return RemoteKeySource.from_policy(issuer, allowed)
    except JoseError as exc:
        raise ConfigurationError(f"cannot use the key set: {exc.reason}", path=path) from None
    for reason in skipped:
        log.warning("bankguard: issuer %s: key skipped: %s", issuer.issuer, reason)
    if not len(source.current() or ()):
        raise ConfigurationError("the key set holds no usable key for the listed algorithms", path=where)
    return source


def build_verifier(tokens: TokensPolicy, clock: Callable[[], float] = time.time) -> JwtVerifier | None:
    if not tokens.issuers:
        return None
    rules = {}
    for i, issuer in enumerate(tokens.issuers):
        rules[issuer.issuer] = IssuerRules(
            issuer=issuer.issuer,
            audiences=frozenset(issuer.audiences),
            algorithms=frozenset(issuer.algorithms),
            typ=frozenset(normalise_typ(t) for t in issuer.typ),
            required_claims=tuple(issuer.required_claims),
            keys=key_source(issuer, f"tokens.issuers[{i}]"),
        )
    return JwtVerifier(
        rules,
        leeway=tokens.leeway,
        max_future_iat=tokens.max_future_iat,
        max_token_bytes=tokens.max_token_bytes,
        clock=clock,
    )


def build_introspection(tokens: TokensPolicy, clock: Callable[[], float] = time.time) -> Any | None:
    if tokens.introspection is None:
        return None
    from .introspection import IntrospectionClient

    return IntrospectionClient(tokens.introspection, clock=clock, max_entries=max(1, tokens.cache_entries))


def close_sources(verifier: JwtVerifier | None) -> None:
    if verifier is not None:
        for rules in verifier.issuers.values():
            rules.keys.close()


def build_dpop(policy: Any, clock: Callable[[], float] = time.time) -> Any:
    """The DPoP proof verifier the policy asks for, or None when the scheme is off."""
    dpop = policy.dpop
    if not dpop.enabled:
        return None
    from .dpop import DPoPVerifier
    from .dpop_nonce import NonceIssuer

    nonces = None
    if dpop.nonce.enabled:
        secret = os.environ.get(dpop.nonce.secret_env or "", "").encode("utf-8")
        try:
            nonces = NonceIssuer(
                secret, lifetime=dpop.nonce.lifetime, rotate_after=dpop.nonce.rotate_after, clock=clock
            )
        except ValueError as exc:  # the variable changed since the policy was loaded
            raise ConfigurationError(str(exc), path="dpop.nonce.secret_env") from None
    return DPoPVerifier(
        algorithms=dpop.algorithms,
        origins=policy.external_origins,
        max_age=dpop.max_age,
        future_skew=dpop.future_skew,
        max_proof_bytes=dpop.max_proof_bytes,
        nonces=nonces,
        clock=clock,
    )


def build_store(storage: Any) -> Any:
    """The store the policy's ``storage.uri`` names (memory, or Redis shared by every worker)."""
    from ..stores import MemoryStore

    if not storage.shared:
        return MemoryStore(max_entries=storage.max_entries)
    try:
        from ..stores_redis import RedisStore
    except ImportError:
        raise ConfigurationError(
            "a Redis storage needs the redis package: pip install 'bankguard[redis]'", path="storage.uri"
        ) from None
    try:
        return RedisStore(storage.uri, prefix=storage.prefix, timeout=storage.timeout)
    except ValueError as exc:  # the message never holds the password
        raise ConfigurationError(str(exc), path="storage.uri") from None
