"""Token exchange (``POST /v1/token``) and introspection (``POST /v1/introspect``).

Both run as appender jobs, so the decision, the token's record and its audit entry commit
together, and nothing is answered before that commit (fail closed). They are read-only jobs (see
``vault.audit.appender``): what they read under the chain lock (the caller, the subject, the
policy, the token's row) is read once per batch, and the token's row is inserted with the batch.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.appender import Job, JobContext, Read
from vault.audit.entry import TOKEN_DENIED, TOKEN_ISSUED, TOKEN_REJECTED, TOKEN_USED, Draft
from vault.config import Settings
from vault.crypto.keys import TOKEN as TOKEN_PURPOSE
from vault.domain import DELEGATOR, VERIFIER, Principal, Subject, shown_escaped
from vault.errors import (
    AmbiguousSubject,
    ExpiredToken,
    Forbidden,
    InvalidRequest,
    MalformedToken,
    PolicyChanged,
    RevokedToken,
    SignedTokenError,
    TokenError,
    TokenTooLarge,
    Unauthenticated,
    UnknownSubject,
    UnknownToken,
    VaultError,
    WrongTokenType,
)
from vault.ops.keyring import KeyManager
from vault.policy.delegation import DelegationPolicy, check_reason, decide, parse_policy
from vault.policy.scopes import ScopeTable
from vault.redact import looks_secret, redact_secrets
from vault.storage import principals_repo, subjects_repo, tokens_repo
from vault.storage.engine import Tx
from vault.storage.tables import TokenRow
from vault.tokens import jws
from vault.tokens.claims import Claims, build_claims

TOKEN_REQUEST_MEMBERS = frozenset({"subject", "scope", "ttl_seconds", "reason"})
MAX_USE_FIELD_CHARS = 2048  # an introspection's method, path and client_ip
MAX_SUBJECT_NAME = 320  # characters: an id, or an email (RFC 3696's longest)
SIGNING_KEY = ("signing key", TOKEN_PURPOSE)  # the memo's key for the token signing key


def _principal(session: Tx, ctx: JobContext, principal_id: str) -> Principal | None:
    return ctx.memoized(
        ("principal", principal_id),
        lambda: principals_repo.get_principal(session, principal_id),
        lasting=True,
    )


def _subject(session: Tx, ctx: JobContext, id_or_email: str) -> Subject | None:
    return ctx.memoized(
        ("subject", id_or_email),
        lambda: subjects_repo.find_subject(session, id_or_email),
        lasting=True,
    )


def _named_subject_id(session: Tx, ctx: JobContext, named: Any) -> str | None:
    """The id of the subject a refused request named (by id or email), if it is one we know:
    a denial is then found by its subject like every other entry about that subject."""
    if not isinstance(named, str) or not named or len(named) > MAX_SUBJECT_NAME:
        return None
    try:
        subject = _subject(session, ctx, named)
    except AmbiguousSubject:  # names two subjects: the denial names neither
        return None
    return None if subject is None else subject.id


def _policy(
    ctx: JobContext, delegator: Principal, settings: Settings, scopes: ScopeTable
) -> DelegationPolicy:
    return ctx.memoized(
        ("policy", delegator.id),
        lambda: parse_policy(
            delegator.policy, known_scopes=scopes.names, vault_max_ttl=settings.max_ttl, stored=True
        ),
        lasting=True,
    )


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    claims: Claims

    def to_response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.claims.ttl_seconds,
            "scope": self.claims.scope_text,
            "jti": self.claims.jti,
            "issued_token_type": "urn:ietf:params:oauth:token-type:jwt",
        }


def _echo(value: Any) -> Any:
    """A requested value as the denial entry may hold it: short, JSON-safe, never a secret."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 - 1 else str(value)[:40]
    text = value if isinstance(value, str) else f"<{type(value).__name__}>"
    if looks_secret(text):
        return "[redacted: looked like a secret]"
    return shown_escaped(text[:500])


@dataclass(frozen=True, slots=True)
class TokenRequest:
    subject: str
    scope: str | None
    ttl_seconds: int | None
    reason: str | None


def parse_token_request(body: Any) -> TokenRequest:
    """``body`` is the request's JSON, or the ``InvalidRequest`` that says why it had none."""
    if isinstance(body, InvalidRequest):
        raise body
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    extra = sorted(set(body) - TOKEN_REQUEST_MEMBERS)
    if extra:
        raise InvalidRequest(f"unknown member(s): {', '.join(extra)}")
    subject = body.get("subject")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_NAME:
        raise InvalidRequest("subject must be a subject id or email")
    scope = body.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise InvalidRequest("scope must be a space-separated string")
    ttl = body.get("ttl_seconds")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)):
        raise InvalidRequest("ttl_seconds must be an integer")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidRequest("reason must be a string")
    if reason is not None and looks_secret(reason):
        raise InvalidRequest("reason looks like it holds a credential or token; it was refused")
    return TokenRequest(subject=subject, scope=scope, ttl_seconds=ttl, reason=reason)


def issue_job(
    settings: Settings,
    scopes: ScopeTable,
    keyring: KeyManager,
    caller: Principal,
    body: Any,
    client_ip: str | None,
) -> Job[IssuedToken]:
    raw = body if isinstance(body, dict) else {}

    def job(session: Tx, ctx: JobContext) -> IssuedToken:
        subject_id: str | None = None
        fresh = _principal(session, ctx, caller.id)
        if fresh is None or fresh.disabled:
            # Disabled since its credential was checked (the server's credential cache, or
            # another process): refused as any credential no longer good is, 401 and nothing
            # recorded (a 403, and a token.denied entry, would say it is real but disabled).
            raise Unauthenticated("a valid credential is required")
        try:
            if not fresh.has(DELEGATOR):
                raise Forbidden("only an enabled delegator exchanges its credential for tokens")
            request = parse_token_request(body)
            reason = check_reason(request.reason, required=settings.require_reason)
            scope = scopes.parse_request(request.scope)
            subject = _subject(session, ctx, request.subject)
            if subject is None:
                raise UnknownSubject("no such subject")
            subject_id = subject.id
            policy = _policy(ctx, fresh, settings, scopes)
            grant = decide(
                policy,
                subject,
                scope=scope,
                ttl_seconds=request.ttl_seconds,
                known_scopes=scopes.names,
                default_ttl=settings.default_ttl,
                vault_max_ttl=settings.max_ttl,
            )
        except VaultError as exc:
            if subject_id is None:  # refused before the subject was looked up: name it if known
                subject_id = _named_subject_id(session, ctx, raw.get("subject"))
            ctx.refuse(
                Draft(
                    type=TOKEN_DENIED,
                    actor=caller.id,
                    subject=subject_id,
                    data={
                        "subject": _echo(raw.get("subject")),
                        "scope": _echo(raw.get("scope")),
                        "ttl_seconds": _echo(raw.get("ttl_seconds")),
                        "reason": _echo(raw.get("reason")),
                        "error": exc.code,
                        "client_ip": client_ip,
                    },
                )
            )
            raise
        # Read under the chain lock (kept while the state stamp holds): a key retired by any
        # process signs nothing after its rotation commits.
        key = ctx.memoized(
            SIGNING_KEY, lambda: keyring.signing_now(session, TOKEN_PURPOSE), lasting=True
        )
        claims = build_claims(
            issuer=settings.issuer,
            audience=settings.audience,
            subject_id=subject.id,
            actor_id=caller.id,
            scope=grant.scope,
            ttl_seconds=grant.ttl_seconds,
            now=int(ctx.now.timestamp()),
        )
        token = jws.sign(claims, key)
        ctx.insert(TokenRow, tokens_repo.token_row(claims, kid=key.kid, subject_role=subject.role))
        ctx.record(
            Draft(
                type=TOKEN_ISSUED,
                actor=caller.id,
                subject=subject.id,
                data={
                    "jti": claims.jti,
                    "scope": claims.scope_text,
                    "exp": claims.exp,
                    "ttl_seconds": claims.ttl_seconds,
                    "reason": reason,
                    "client_ip": client_ip,
                    "kid": key.kid,
                },
            )
        )
        return IssuedToken(token, claims)

    return job


@dataclass(frozen=True, slots=True)
class UseRequest:
    token: str
    method: str | None
    path: str | None
    client_ip: str | None


USE_REQUEST_MEMBERS = frozenset({"token", "method", "path", "client_ip"})


def parse_use_request(body: Any) -> UseRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    extra = sorted(set(body) - USE_REQUEST_MEMBERS)
    if extra:
        raise InvalidRequest(f"unknown member(s): {', '.join(extra)}")
    token = body.get("token")
    if not isinstance(token, str) or not token:
        raise InvalidRequest("token is required")
    fields: dict[str, str | None] = {}
    for name in ("method", "path", "client_ip"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{name} must be a string")
        if value is not None and len(value) > MAX_USE_FIELD_CHARS:
            raise InvalidRequest(f"{name} must be at most {MAX_USE_FIELD_CHARS} characters")
        fields[name] = value
    return UseRequest(token=token, **fields)


def _unsecret(value: str | None) -> str | None:
    """``value`` as the log may hold it: whatever in it looks like a credential or a token is
    replaced by ``[redacted]`` (the semantic checks then leave its scope unchecked)."""
    return None if value is None else redact_secrets(value)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


INACTIVE: dict[str, Any] = {"active": False}


class VerifiedSignatures:
    """Tokens whose signature this process has verified, with their payload: a delegation token
    is introspected on every request it makes, and its signature need not be checked each time.

    Only the signature is remembered. A hit still needs its key to be published (a retired key
    past its publication ends it), and the claims, revocation and policy are checked at every
    use as before. Entries go when the token expires, and the oldest first beyond ``capacity``.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._entries: dict[str, tuple[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()  # the event loop and the threadpool both come here

    def verify(
        self, token: str, token_key: Callable[[str], Ed25519PublicKey | None], now: int
    ) -> dict[str, Any]:
        """The payload of ``token`` if its signature verifies (``jws.verify_signature``)."""
        found = self._entries.get(token)
        if found is not None:
            kid, payload = found
            exp = payload.get("exp")
            if isinstance(exp, int) and now < exp and token_key(kid) is not None:
                return payload
            with self._lock:
                self._entries.pop(token, None)
        kid, payload = jws.verify_signature(token, token_key)
        with self._lock:
            if len(self._entries) >= self._capacity:
                del self._entries[next(iter(self._entries))]  # dicts keep insertion order
            self._entries[token] = (kid, payload)
        return payload


def introspect_job(
    settings: Settings,
    scopes: ScopeTable,
    verifier: Principal,
    use: UseRequest,
    now: int,
    token_key: Callable[[str], Ed25519PublicKey | None],
    signatures: VerifiedSignatures,
) -> tuple[Job[dict[str, Any]], tuple[Read, ...]] | None:
    """The job recording this use and what it will read, or ``None`` when the token is not
    ours at all.

    A token whose signature does not verify (forged, unknown key, malformed) gets
    ``{"active": false}`` with no audit entry: an unauthenticated party cannot fill the log.
    """
    claims: Claims | None = None
    refusal: TokenError | None = None
    try:
        payload = signatures.verify(use.token, token_key, now)
    except (WrongTokenType, TokenTooLarge, MalformedToken) as exc:
        # Refused by its form, perhaps before its signature was checked: still recorded if one
        # of our keys signed it (only the vault, or whoever holds its keys, could have made it).
        signed = jws.signed_by_us(use.token, token_key)
        if signed is None:
            return None
        payload, refusal = signed, exc
    except VaultError:
        return None
    if refusal is None:
        try:
            claims = jws.check_claims(
                payload,
                issuer=settings.issuer,
                audience=settings.audience,
                now=now,
                leeway=settings.leeway_seconds,
            )
        except SignedTokenError as exc:
            refusal = exc

    # What the verifier says of the request goes into the log: never a secret in it (a
    # credential or a token in a path). The scope is decided on the request as it was. Made
    # once, here, not in the job (which runs under the chain lock, and may run twice).
    where = {
        "method": _unsecret(use.method),
        "path": _unsecret(use.path),
        "client_ip": _unsecret(use.client_ip),
        "verifier": verifier.id,
    }

    def job(session: Tx, ctx: JobContext) -> dict[str, Any]:
        # The credential was checked before the job (perhaps from a cache): this is the check
        # that counts, on the state the batch commits with. Nothing is recorded for a caller
        # refused here. The job may run twice (the appender's prepare), so it changes nothing
        # outside ``ctx``.
        current = _principal(session, ctx, verifier.id)
        if current is None or current.disabled or not current.has(VERIFIER):
            raise Unauthenticated("a valid credential is required")
        jti = payload.get("jti") if isinstance(payload.get("jti"), str) else None
        subject_role: str | None = None
        refused: TokenError | None = refusal
        if claims is not None and refused is None:
            refused, subject_role = _still_authorized(session, claims, ctx, settings, scopes)
        if refused is not None or claims is None:
            sub = payload.get("sub") if isinstance(payload.get("sub"), str) else None
            act = payload.get("act")
            actor = (
                act.get("sub")
                if isinstance(act, dict) and isinstance(act.get("sub"), str)
                else None
            )
            ctx.record(
                Draft(
                    type=TOKEN_REJECTED,
                    actor=actor,
                    subject=sub,
                    data={
                        "jti": jti,
                        "reason": refused.code if refused else "invalid_token",
                        "token_sha256": token_digest(use.token),
                        **where,
                    },
                )
            )
            return dict(INACTIVE)
        # A use that names no request (no method or no path) allows nothing: the log never
        # says "allowed" of a request whose scope was not checked.
        allowed = (
            use.method is not None
            and use.path is not None
            and scopes.allows(claims.scope, use.method, use.path)
        )
        outcome = "allowed" if allowed else "denied_scope"
        ctx.record(
            Draft(
                type=TOKEN_USED,
                actor=claims.actor,
                subject=claims.sub,
                data={"jti": claims.jti, "outcome": outcome, **where},
            )
        )
        return {
            "active": True,
            "sub": claims.sub,
            "act": {"sub": claims.actor},
            "scope": claims.scope_text,
            "exp": claims.exp,
            "jti": claims.jti,
            "client_id": claims.client_id,
            "iss": claims.iss,
            "aud": claims.aud,
            "iat": claims.iat,
            "token_type": "Bearer",
            "outcome": outcome,
            "subject_role": subject_role,
        }

    jti = payload.get("jti")
    reads: tuple[Read, ...] = ()
    if claims is not None and refusal is None and isinstance(jti, str):
        reads = (("token", tokens_repo.token_states, jti),)
    return job, reads


def _still_authorized(
    session: Tx, claims: Claims, ctx: JobContext, settings: Settings, scopes: ScopeTable
) -> tuple[SignedTokenError | None, str | None]:
    """Is this token still good *now*, on the state the batch commits with? Checked at every
    use, so that a revocation, a deactivated or re-roled subject, a disabled delegator or a
    narrowed policy takes effect on the next request, not when the token expires. Returns the
    refusal (or None) and the subject's role as authorized (the middleware holds the app to
    it)."""
    # From exp on by the vault's own clock, with no leeway: the leeway is for clocks that
    # differ (a verifier's nbf and iat checks), and exp is the vault's own time. A token the
    # vault still honoured after exp could not be revoked (revocation takes live tokens, exp
    # in the future), and the middleware refuses it from exp on too.
    if int(ctx.now.timestamp()) >= claims.exp:
        return ExpiredToken("token has expired"), None  # perhaps while its use was queued
    ctx.holds_until(claims.exp)  # an allowed use must be recorded before it expires
    # Kept for later batches while the state stamp holds: a token's row changes only by its
    # revocation, a job that replaces the stamp. (Kept "never issued" is never wrong either: a
    # token is handed out only once its row is committed, so no use of it comes before.)
    state, issued, issued_role = ctx.memoized(
        ("token", claims.jti),
        lambda: tokens_repo.token_state(session, claims.jti),
        lasting=True,
    )
    if state != tokens_repo.UNKNOWN and issued != tokens_repo.issued_as(claims):
        # Its jti was issued (and perhaps revoked since), but not with these claims: only a
        # holder of a signing key could have made this token. It was never issued here.
        state = tokens_repo.UNKNOWN
    if state == tokens_repo.REVOKED:
        return RevokedToken("token was revoked"), None
    if state != tokens_repo.LIVE:
        return UnknownToken("token was never issued"), None
    delegator = _principal(session, ctx, claims.actor)
    if delegator is None or delegator.disabled or not delegator.has(DELEGATOR):
        return RevokedToken("the delegator is disabled"), None
    subject = ctx.memoized(
        ("subject-id", claims.sub),
        lambda: subjects_repo.get_subject(session, claims.sub),
        lasting=True,
    )
    if subject is None:
        return RevokedToken("the subject is gone"), None
    if issued_role is not None and subject.role != issued_role:
        # Issued for a user, the subject is an admin now (or the other way): a token never
        # acts with another role than the one it was issued for, even where the delegator's
        # policy allows that role too. A new token can be asked for.
        return PolicyChanged(f"the subject's role is no longer {issued_role!r}"), None
    policy = _policy(ctx, delegator, settings, scopes)
    try:
        decide(
            policy,
            subject,
            scope=claims.scope,
            ttl_seconds=1,
            known_scopes=scopes.names,
            default_ttl=settings.default_ttl,
            vault_max_ttl=settings.max_ttl,
        )
    except VaultError as exc:
        return PolicyChanged(f"no longer authorized: {exc.description}"), None
    return None, subject.role
