"""The access-token control: verify the token, establish the principal, check scopes.

An operation needs a token when the policy declares it non-public or the application
declared scopes for it (:func:`bankguard.require_scopes`). Then:

* no credentials → 401 with every enabled challenge and no ``error`` (RFC 6750 §3.1, E1);
* a scheme other than ``Bearer`` → 401 E1 (DPoP arrives with its own control);
* a JWT (three segments) is verified against the configured issuers
  (:mod:`bankguard.tokens.jwt`); an opaque token goes to RFC 7662 introspection when it
  is configured → 401 ``invalid_token`` on any failure (E2), 503 when the introspection
  endpoint cannot answer (INTRO-05);
* a token bound to a key (``cnf.jkt``, RFC 9449) presented as Bearer is refused
  (DPOP-18); a certificate-bound token (``cnf.x5t#S256``, RFC 8705 §3) is refused while
  no client certificate control can verify the binding (MTLS-02, fail closed); under
  ``require_sender_constraint`` a token without ``cnf`` is refused (FAPI 2.0 §5.3.4);
* scopes: every required scope and one of each any-of group, else 403
  ``insufficient_scope`` with ``scope=`` (RFC 6750 §3.1, E5).

A verified JWT is remembered (by hash) until it expires, so a repeated token costs a
dictionary lookup. An unknown ``kid`` triggers one rate-limited key refresh, run by the
guard's driver off the event loop.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Literal

from ..decision import Principal
from ..errors import (
    AuthenticationRequired,
    HeaderFieldsTooLarge,
    InsufficientScope,
    InvalidDPoPProof,
    InvalidToken,
    ServiceUnavailable,
    UseDPoPNonce,
)
from ..policy import Policy
from ..request import RequestFacts
from ..scopes import ScopeRequirement
from ..stores import Call, SetIfAbsent
from ..tokens.cache import TokenCache, token_key
from ..tokens.dpop import DPoPVerifier, NonceError, ProofError, VerifiedProof
from ..tokens.jwt import (
    JwtVerifier,
    ParsedJwt,
    TokenError,
    UnknownKid,
    VerifiedToken,
    optional_string,
    parse_scope,
)
from . import State, StoreFlow

log = logging.getLogger("bankguard")

#: Client-facing details for the commonest refusals (RFC 6750 §3.1 error_description);
#: everything else gets the generic text. The precise reason is in the audit event.
_DETAILS = {
    "expired": "The access token has expired.",
    "not_yet_valid": "The access token is not valid yet.",
    "audience_mismatch": "The access token was not issued for this API.",
}


def invalid_token(reason: str) -> InvalidToken:
    return InvalidToken(f"token.{reason}", detail=_DETAILS.get(reason))


#: Client-facing details for DPoP proof refusals (E3); others get the class's generic text.
_PROOF_DETAILS = {
    "dpop.proof_missing": "The DPoP scheme requires exactly one DPoP proof header.",
    "dpop.multiple_proofs": "The DPoP scheme requires exactly one DPoP proof header.",
    "dpop.replayed": "The DPoP proof has been used before.",
    "dpop.iat_too_old": "The DPoP proof is too old.",
    "dpop.iat_in_future": "The DPoP proof is dated in the future.",
    "dpop.htm_mismatch": "The DPoP proof was made for another method.",
    "dpop.htu_origin_mismatch": "The DPoP proof was made for another URL.",
    "dpop.htu_path_mismatch": "The DPoP proof was made for another URL.",
    "dpop.ath_mismatch": "The DPoP proof was made for another access token.",
    "dpop.ath_missing": "The DPoP proof does not name the access token (ath).",
}


def invalid_proof(reason: str) -> InvalidDPoPProof:
    return InvalidDPoPProof(reason, detail=_PROOF_DETAILS.get(reason))


def bearer_downgrade() -> InvalidToken:
    """A DPoP-bound token presented as Bearer (RFC 9449 §7.2): the Bearer challenge carries the
    error and the DPoP challenge is offered beside it."""
    denial = InvalidToken("token.dpop_bound_presented_as_bearer")
    denial.offer_all = True
    return denial


def operation_requirement(state: State, facts: RequestFacts) -> ScopeRequirement | None:
    """Scopes required by the policy's operation and by the application's declarations."""
    op = state.operation
    declared = facts.requirements
    if op is None or op.public or op.requirement is None:
        return declared
    return op.requirement.merge(declared) if declared else op.requirement


def _principal(token: VerifiedToken) -> Principal:
    # A DPoP-bound token is only ever accepted with its proof (a Bearer presentation is
    # refused), so its principal carries the binding from the start.
    return Principal(
        authenticated=True,
        subject=token.subject,
        client_id=token.client_id,
        scopes=token.scopes,
        claims=token.claims,
        binding="dpop" if token.has_jkt else None,
    )


class TokenCheck:
    name = "tokens"

    def __init__(
        self,
        policy: Policy,
        *,
        verifier: JwtVerifier | None,
        introspection: Any | None = None,
        dpop: DPoPVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        tokens = policy.tokens
        #: Proof verification for ``Authorization: DPoP`` (None: the scheme is not enabled).
        self.dpop = dpop
        #: Warn once when DPoP requests are served by a process forked after this was built
        #: while the replay entries are process-local (set by the guard; CFG-08).
        self.warn_on_fork = False
        self._pid = os.getpid()
        self.mode = tokens.mode
        self.verifier = verifier
        self.introspection = introspection
        self.leeway = tokens.leeway
        self.max_token_bytes = tokens.max_token_bytes
        self.require_binding = bool(tokens.require_sender_constraint)
        self.cache = TokenCache(tokens.cache_entries)
        self.clock = clock
        self.introspection_policy = tokens.introspection
        self.tpp_claim = policy.client_cert.token_tpp_claim
        self._variants: dict[tuple[Any, ...], tuple[Principal, Principal]] = {}
        #: Whether any token can be verified at all (an issuer or introspection is configured).
        self.configured = verifier is not None or introspection is not None
        if verifier is not None:
            for rules in verifier.issuers.values():
                listeners = getattr(rules.keys, "listeners", None)
                if isinstance(listeners, list):
                    listeners.append(self.forget_verified)

    def forget_verified(self) -> None:
        """Drop every verified token (the issuer's keys changed or went stale; JWKS-05/06)."""
        self.cache.clear()
        self._variants.clear()

    def run(self, facts: RequestFacts, state: State) -> StoreFlow | None:
        op = state.operation
        requirement = operation_requirement(state, facts)
        creds = state.credentials
        scheme = creds.scheme.lower() if creds is not None else None
        bearer = scheme == "bearer"
        dpop = scheme == "dpop" and self.dpop is not None
        # Nothing declared for this request: nothing to do, except on an operation outside
        # the policy, where a token that is sent is still verified, so that checks made
        # inside the application (require_scopes at call time) see who is calling.
        if (
            (op is None or op.public)
            and not requirement
            and (op is not None or not (bearer or dpop) or not self.configured)
        ):
            return None
        if creds is None:
            raise AuthenticationRequired("token.missing")
        if not (bearer or dpop):
            raise AuthenticationRequired("token.unsupported_scheme")
        if not self.configured:
            raise InvalidToken("token.verification_not_configured")
        token = creds.token
        if len(token) > self.max_token_bytes:
            raise InvalidToken("token.too_large")
        key = token_key(token)
        if not dpop:
            return self._token(token, state, requirement, key)
        # RFC 9449 §7.1: proof first (cheapest refusal, STANDARDS §0 order), then the token,
        # then the key binding (in _accept), then the single use of the jti.
        state.proof = self._proof(facts, token, key)
        return self._with_proof(self._token(token, state, requirement, key), state)

    def _proof(self, facts: RequestFacts, token: str, digest: bytes) -> VerifiedProof:
        verifier = self.dpop
        if verifier is None:  # pragma: no cover - run() checks
            raise AuthenticationRequired("token.unsupported_scheme")
        if self.warn_on_fork and os.getpid() != self._pid:
            self.warn_on_fork = False
            log.warning(
                "bankguard: serving DPoP requests in a forked worker with storage memory://: each "
                "worker keeps its own replay entries; set storage.uri to a Redis URL (CFG-08)"
            )
        lines = facts.headers.by_name.get("dpop")
        if not lines:
            raise invalid_proof("dpop.proof_missing")  # DPOP-17, STANDARDS §10 C6
        if len(lines) > 1 or "," in lines[0]:
            # A comma cannot occur in a compact JWS: it is how WSGI servers join repeated lines.
            raise invalid_proof("dpop.multiple_proofs")  # DPOP-01
        if len(lines[0]) > verifier.max_proof_bytes:
            raise HeaderFieldsTooLarge("dpop.proof_too_large")  # DPOP-28
        try:
            return verifier.verify(
                lines[0],
                method=facts.method,
                raw_path=facts.raw_path,
                path=facts.path,
                access_token=token,
                token_digest=digest,
            )
        except NonceError as exc:
            raise self.nonce_challenge(exc.reason) from None
        except ProofError as exc:
            raise invalid_proof(exc.reason) from None

    def nonce_challenge(self, reason: str) -> UseDPoPNonce:
        """401 ``use_dpop_nonce`` with exactly one fresh ``DPoP-Nonce`` (E4; RFC 9449 §8, §9)."""
        nonces = self.dpop.nonces if self.dpop is not None else None
        headers = [("dpop-nonce", nonces.issue())] if nonces is not None else []
        return UseDPoPNonce(reason, headers=headers)

    def _with_proof(self, flow: StoreFlow | None, state: State) -> StoreFlow:
        if flow is not None:
            yield from flow
        proof: VerifiedProof = state.proof
        verifier = self.dpop
        if verifier is None:  # pragma: no cover - run() checks
            return
        # DPOP-13: each jti once within the acceptance window, keyed on (a hash of) the jti, so
        # a re-encoded or re-signed proof with the same jti is refused too (ATK-17, ATK-19).
        stored = yield SetIfAbsent(proof.replay_key, "1", verifier.replay_ttl)
        if stored is not True:
            raise invalid_proof("dpop.replayed")
        nonces = verifier.nonces
        if nonces is not None and proof.nonce_age is not None and proof.nonce_age >= nonces.rotate_after:
            state.response_headers.append(("dpop-nonce", nonces.issue()))  # RFC 9449 §8.2

    def _token(
        self, token: str, state: State, requirement: ScopeRequirement | None, key: bytes
    ) -> StoreFlow | None:
        cached = self.cache.get(token, self.clock(), self.leeway, key)
        verifier = self.verifier
        if cached is not None and (
            cached[0].source != "jwt" or verifier is None or self._keys_current(verifier, cached[0].issuer)
        ):
            self._accept(cached[0], state, requirement, cached[1])
            return None
        # Not cached, or cached while its issuer's keys have since gone stale beyond max_stale
        # (JWKS-05): verified again, which fails closed until the keys are fresh.
        if verifier is not None and token.count(".") == 2:
            try:
                parsed = verifier.parse(token)
            except TokenError as exc:
                raise invalid_token(exc.reason) from None
            try:
                verified = self._verify(verifier, parsed)
            except UnknownKid as exc:
                if parsed.rules.keys.refreshable:
                    return self._after_refresh(verifier, token, parsed, state, requirement)
                raise invalid_token(exc.reason) from None
            self._accept(
                verified, state, requirement, self.cache.put(token, verified, _principal(verified), key)
            )
            return None
        if self.introspection is not None:
            return self._introspect(token, state, requirement)
        raise InvalidToken("token.not_a_jwt")

    @staticmethod
    def _keys_current(verifier: JwtVerifier, issuer: str) -> bool:
        rules = verifier.issuers.get(issuer)
        return rules is None or rules.keys.current() is not None

    @staticmethod
    def _verify(verifier: JwtVerifier, parsed: ParsedJwt) -> VerifiedToken:
        """Verify with the issuer's current keys; UnknownKid passes through (also when no keys
        are loaded at all, so a refreshable source gets one refetch), other errors become 401."""
        index = parsed.rules.keys.current()
        try:
            if index is None:
                raise UnknownKid("keys_unavailable")
            return verifier.verify(parsed, index)
        except UnknownKid:
            raise
        except TokenError as exc:
            raise invalid_token(exc.reason) from None

    def _after_refresh(
        self,
        verifier: JwtVerifier,
        token: str,
        parsed: ParsedJwt,
        state: State,
        requirement: ScopeRequirement | None,
    ) -> StoreFlow:
        yield Call(parsed.rules.keys.refresh_unknown_kid)
        try:
            verified = self._verify(verifier, parsed)
        except UnknownKid as exc:
            raise invalid_token(exc.reason) from None
        self._accept(verified, state, requirement, self.cache.put(token, verified, _principal(verified)))

    def _introspect(self, token: str, state: State, requirement: ScopeRequirement | None) -> StoreFlow:
        from ..tokens.introspection import IntrospectionUnavailable, check_claims

        client, policy = self.introspection, self.introspection_policy
        if client is None or policy is None:  # pragma: no cover - only called when configured
            raise InvalidToken("token.not_a_jwt")
        result = client.cached(token)
        if result is None:
            result = yield Call(_returning_errors(client.introspect, token))
        if isinstance(result, IntrospectionUnavailable):
            raise ServiceUnavailable(f"token.introspection_unavailable:{result.reason}", retry_after=5)
        if isinstance(result, BaseException):
            raise result
        if not result.active:
            raise InvalidToken("token.inactive")
        token_type = result.claims.get("token_type")
        is_dpop = isinstance(token_type, str) and token_type.lower() == "dpop"
        if state.proof is None and is_dpop:
            raise bearer_downgrade()  # RFC 9449 §6.2 (DPOP-16)
        if state.proof is not None and token_type is not None and not is_dpop:
            raise InvalidToken("token.type_not_dpop")  # RFC 9449 §6.2: token_type must be DPoP
        reason = check_claims(result, policy, self.clock(), self.leeway)
        if reason is not None:
            raise InvalidToken(f"token.{reason}")
        try:
            claims = result.claims
            verified = VerifiedToken(
                claims=claims,
                issuer=str(claims.get("iss", "")),
                subject=optional_string(claims, "sub"),
                client_id=optional_string(claims, "client_id"),
                scopes=parse_scope(claims.get("scope")),
                expires_at=result.expires_at,
                cnf=result.cnf,
                source="introspection",
            )
        except TokenError as exc:
            raise invalid_token(exc.reason) from None
        self._accept(verified, state, requirement)

    def _with_transport(
        self,
        principal: Principal,
        binding: Literal["mtls", "dpop"] | None,
        tpp_id: str | None,
        roles: frozenset[str],
    ) -> Principal:
        """The principal with what the certificate established; built once per token and TPP."""
        key = (id(principal), binding, tpp_id, roles)
        hit = self._variants.get(key)
        if hit is not None and hit[0] is principal:  # the base object is held, so its id is its own
            return hit[1]
        merged = dataclasses.replace(principal, binding=binding, tpp_id=tpp_id, roles=roles)
        if self._variants and len(self._variants) >= max(1, self.cache.max_entries):
            self._variants.pop(next(iter(self._variants)), None)
        self._variants[key] = (principal, merged)
        return merged

    def _accept(
        self,
        token: VerifiedToken,
        state: State,
        requirement: ScopeRequirement | None,
        principal: Principal | None = None,
    ) -> None:
        proof: VerifiedProof | None = state.proof
        # Merged principals are remembered per certificate record for Bearer presentations
        # only; a DPoP presentation is checked in full each time (its binding is per proof).
        variants = state.variants if proof is None else None
        if variants is not None and principal is not None:
            # This token was accepted before together with this very certificate record (the
            # entry exists only after every check below passed for the pair): reuse the result.
            hit = variants.get(id(principal))
            if hit is not None and hit[0] is principal:
                state.principal = hit[2]
                if requirement and (unmet := requirement.unmet(token.scopes)):
                    raise InsufficientScope("scope.insufficient", required=unmet)
                return
        binding: Literal["mtls", "dpop"] | None = None
        if proof is not None:
            # RFC 9449 §6.1, §7.1: the token is bound to the proof's key (cnf.jkt = its RFC 7638
            # thumbprint). An unbound or certificate-only token with the DPoP scheme is refused
            # (DPOP-19, MTLS-05); a mismatch is invalid_token (STANDARDS §10 C5).
            if not token.has_jkt:
                raise InvalidToken("token.not_dpop_bound")
            jkt = token.cnf.get("jkt") if token.cnf is not None else None
            if not isinstance(jkt, str) or not jkt.isascii() or not hmac.compare_digest(jkt, proof.jkt):
                raise InvalidToken("token.dpop_key_mismatch", detail="Invalid DPoP key binding.")
            binding = "dpop"
        elif token.has_jkt:
            raise bearer_downgrade()  # RFC 9449 §7.2 (DPOP-18)
        if token.has_x5t:
            # RFC 8705 §3: the token is bound to the certificate the client presented.
            certificate = state.certificate
            if certificate is None:
                raise InvalidToken("token.certificate_missing")
            x5t = token.x5t
            if (
                not isinstance(x5t, str)
                or not x5t.isascii()
                or not hmac.compare_digest(x5t, certificate.thumbprint)
            ):
                raise InvalidToken("token.certificate_mismatch")
            binding = binding or "mtls"  # both bindings present: both verified (MTLS-05)
        if self.require_binding and binding is None:
            # Only the confirmation methods bankguard verifies count (RFC 8705 §3.1, RFC 9449 §6);
            # any other cnf member (x5t, jwk, kid...) binds nothing here.
            raise InvalidToken("token.not_sender_constrained")
        if self.tpp_claim is not None:
            # EIDAS-06: the token must belong to the TPP the certificate identifies.
            if state.tpp_id is None:
                raise InvalidToken("token.tpp_unverified")
            if token.claims.get(self.tpp_claim) != state.tpp_id:
                raise InvalidToken("token.tpp_mismatch")
        if principal is None:
            principal = _principal(token)
        if (binding is not None and principal.binding != binding) or state.tpp_id is not None:
            # Merged principals are kept with the certificate's record (one TPP identity per
            # record), by id of the token's principal, which the entry holds so the id stays its own.
            base = principal
            principal = self._with_transport(base, binding, state.tpp_id, state.roles)
            if variants is not None and len(variants) < 64:
                variants[id(base)] = (base, binding, principal)
        state.principal = principal
        if requirement:
            unmet = requirement.unmet(token.scopes)
            if unmet:
                raise InsufficientScope("scope.insufficient", required=unmet)


def _returning_errors(fn: Callable[[str], Any], token: str) -> Callable[[], Any]:
    """Run ``fn(token)``; return its exception instead of raising, so the check sees it."""

    def call() -> Any:
        try:
            return fn(token)
        except Exception as exc:
            return exc

    return call
