"""``DelegationMiddleware``: turn a delegation token into a request by its subject, or refuse.

For a request whose bearer token is a delegation token (JWS header ``typ: at+jwt``):

1. verify it locally against the vault's JWKS (forgeries get 401 and never reach the vault);
2. check the method and path against the token's scopes;
3. introspect at the vault, which checks revocation and records the use (``token.used``, with
   ``outcome: denied_scope`` for step 2's refusals); vault unreachable → 503, fail closed;
4. hand the request on as the subject: the ``UserMapper`` mints the app's own credential for
   that user, which replaces the ``Authorization`` header; cookies and ``x-api-key`` are dropped.

No request reaches the app before the vault's verdict, by default. For a safe method (GET,
HEAD) within the token's scopes, what step 4 checks of the user (that the app's user still has
the role the vault authorized) is checked on the user the app itself resolved for the request,
when the app first answers: a user whose role changed gets the refusal, and the app's answer is
dropped (its ``send`` raises ``ResponseWithheld``, ending its work). That spares a read of the
user per request (the app reads it anyway); a method that may change state (POST, PUT, PATCH,
DELETE, …) is only handed on after the user was read and checked.

With ``overlap_safe_methods`` (off by default), steps 3 and 4 overlap for those safe methods:
the introspection runs while the app prepares its answer, and **nothing of the answer leaves
before the vault's verdict** (the first ``send`` waits for it); a refused token's request gets
the refusal, exactly as in the strict order. What the overlap allows is that the app *computes*
a read for a token the vault is about to refuse (revoked, or the vault down), side effects of
that read included. The use is recorded at the vault either way.

Native credentials minted here never reach the caller: ``Set-Cookie`` for them is removed, and any
other response header or body that echoes one has it taken out (JSON) or masked (streamed).
Everything else (other bearer tokens, cookies, ``sk-`` keys, websockets, lifespan) passes through
untouched. State is per request, in locals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from vault.crypto.b64 import b64url_decode
from vault.errors import ExpiredToken, TokenError, UnknownKey, VaultError
from vault.middleware.remote_keys import RemoteKeySet
from vault.middleware.seen import SeenTokens
from vault.middleware.vault_http import VaultHttp, VaultHttpError
from vault.policy.scopes import ScopeTable, default_table
from vault.tokens import jws
from vault.tokens.claims import TOKEN_TYPE, Claims

log = logging.getLogger("vault.middleware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STRIPPED_REQUEST_HEADERS = {b"authorization", b"cookie", b"x-api-key"}
SAFE_METHODS = frozenset({"GET", "HEAD"})  # RFC 9110 §9.2.1, less OPTIONS (CORS, no bearer)
SESSION_COOKIES = (b"token=", b"oauth_id_token=", b"oauth_session_id=")
RETRY_AFTER = b"1"  # seconds, on a 503 (as the vault's own 503s say)
KEYS_WAIT_SECONDS = 0.25  # how long a token naming another issuer waits for the vault's keys


class UnknownUser(VaultError):
    """The token's subject is not an active user of the app."""

    code = "unknown_user"


ROLE_CHANGED = (
    "the subject's role in the app is not the one the vault authorized; "
    "the vault's subjects need a sync ('dvault subjects sync')"
)


class DelegationExpired(UnknownUser):
    """The delegation token's ``exp`` passed before the app could act as its subject (the
    middleware refuses a token past ``exp`` first; this is the race after that check)."""

    code = ExpiredToken.code


class SubjectRoleChanged(UnknownUser):
    """The user's role in the app is not the role the vault authorized (re-sync subjects)."""

    code = "subject_role_changed"


class UserMapper(Protocol):
    async def native_token(
        self, user_id: str, *, not_after: int, role: str | None = None, checked: bool = True
    ) -> str:
        """A credential of the app for ``user_id`` valid until ``not_after`` at the latest;
        raises ``UnknownUser``, also when the user's role in the app is not ``role`` (the
        subject's role as the vault authorized it).

        ``checked=False`` allows answering, without reading the user again, with a credential
        minted earlier for the same user and delegation. The middleware asks so only when it
        checks the user (``resolved_role``, else a checked call) before anything of the app's
        answer is released."""
        ...

    def resolved_role(self, state: MutableMapping[str, Any]) -> str | None:
        """The role of the user the app itself resolved for this request, if the app left it
        in the request's state (``scope["state"]``) by the time it answers; else ``None``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifierConfig:
    vault_url: str
    credential: str
    issuer: str
    audience: str = "open-webui"
    leeway_seconds: int = 30
    introspect_timeout: float = 5.0
    overlap_safe_methods: bool = False  # the app may start on a GET/HEAD before the verdict


class _Refusal(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description


class ResponseWithheld(Exception):
    """Raised into the app's ``send``: the vault refused the token, the answer is dropped."""


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def delegation_header(token: str) -> dict[str, Any] | None:
    """Routing only: the header if this looks like one of our tokens (a JWS with ``typ:
    at+jwt``), else None. Never trusted further: ``jws.verify`` checks everything."""
    if token.startswith("sk-") or token.count(".") != 2:
        return None
    try:
        header = jws.read_header(token)
    except TokenError:
        return None
    typ = header.get("typ")
    if isinstance(typ, str) and typ.lower() in {TOKEN_TYPE, "application/" + TOKEN_TYPE}:
        return header
    return None


def is_delegation_token(token: str) -> bool:
    return delegation_header(token) is not None


def names_another_issuer(token: str, issuer: str) -> bool:
    """Routing only: whether the token's unverified payload names an ``iss`` other than
    ``issuer``. Such a token is another issuer's ``at+jwt``, not a delegation token of this
    vault, and passes through to the app untouched (SPEC §8), which trusts it no more than any
    other bearer token it did not issue. A payload that cannot be read, or has no ``iss``, is
    not said to be another's: verification refuses it."""
    try:
        payload = json.loads(b64url_decode(token.split(".")[1]))
    except (ValueError, IndexError, RecursionError):
        return False
    iss = payload.get("iss") if isinstance(payload, dict) else None
    return isinstance(iss, str) and iss != issuer


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
    elif status == 503:  # failing closed (the vault unreachable or refusing): try again shortly
        headers.append((b"retry-after", RETRY_AFTER))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class DelegationMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        config: VerifierConfig,
        mapper: UserMapper,
        scopes: ScopeTable | None = None,
        http: httpx.AsyncClient | None = None,
        introspection: VaultHttp | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.config = config
        self.mapper = mapper
        self.scopes = scopes or default_table()
        self.http = http or httpx.AsyncClient(timeout=config.introspect_timeout)
        self.keys = RemoteKeySet(self.http, config.vault_url.rstrip("/") + "/.well-known/jwks.json")
        # Introspection is on every delegated request's path: a lean client (``vault_http``).
        self.introspection = introspection or VaultHttp(
            config.vault_url, timeout=config.introspect_timeout
        )
        self.seen = SeenTokens()
        self.now = now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        # A token seen (and verified) before is ours: no header to parse on this hot path.
        seen = None if token is None else self.seen.get(token, int(self.now()))
        header = None if token is None or seen is not None else delegation_header(token)
        if (
            header is not None
            and names_another_issuer(token or "", self.config.issuer)
            and not await self._signed_by_us(header)
        ):
            header = None  # another issuer's at+jwt: not ours to judge
        if token is None or (seen is None and header is None):
            await self.app(scope, receive, send)
            return
        try:
            claims = seen or await self._verify(token, header)
            if self.now() > claims.exp - 1:
                # The one expiry check here, seen or not: the leeway is for clocks that differ
                # (nbf, iat), never for serving past exp, and a token's last second counts as
                # past (the app's own tokens live whole seconds: none minted now would end with
                # the delegation, and the mapper refuses then too). Refused before the vault
                # is asked, so it records no use as allowed that no one served.
                raise _Refusal(401, ExpiredToken.code, "the delegation token was refused")
            if scope["method"] in SAFE_METHODS and self.scopes.allows(
                claims.scope, scope["method"], scope["path"]
            ):
                await self._safe(token, claims, scope, receive, send)
                return
            native = await self._authorize(token, claims, scope)
        except _Refusal as refusal:
            await _send_json(
                send,
                refusal.status,
                {"error": refusal.code, "error_description": refusal.description},
            )
            return
        await self.app(_as_subject(scope, native, claims), receive, _scrub(send, native))

    async def _signed_by_us(self, header: dict[str, Any]) -> bool:
        """Whether the header names one of the vault's keys: such a token is the vault's
        whatever its ``iss`` says, and is judged (and refused) here. A mismatched
        ``VAULT_ISSUER`` then shows as ``wrong_issuer`` refusals, not as tokens passed to the
        app unchecked. Until the vault's keys were fetched once, they are fetched for this
        question (rate-limited, as for an unknown kid): with a mismatched issuer, every token
        names "another" issuer, and nothing else would ever fetch them."""
        kid = header.get("kid")
        if not isinstance(kid, str):
            return False
        if self.keys.cached(kid) is None and not self.keys.loaded:
            # Waited for briefly: while the vault cannot be reached, another issuer's token
            # (which needs nothing of the vault) must not wait out the fetch's timeout. The
            # fetch goes on, and the next such token is judged by its result.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.keys.ensure(kid)), KEYS_WAIT_SECONDS)
        return self.keys.cached(kid) is not None

    async def _safe(
        self, token: str, claims: Claims, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A safe method within the token's scopes: the app's answer goes out only once the
        vault has said yes and the app's user is the one it authorized (raises ``_Refusal``
        otherwise, with nothing of the app's answer sent). The vault decides before the app
        starts, or, with ``overlap_safe_methods``, while the app prepares its answer."""
        verdict = asyncio.ensure_future(self._introspected(token, claims, scope))
        if self.config.overlap_safe_methods:
            # Let it send its request now: the vault's work then overlaps all of the app's, not
            # only what follows the app's first wait (its database phase, where Open WebUI
            # already keeps two threads busy on two cores).
            await asyncio.sleep(0)
        else:
            await verdict  # the vault's refusal (or its absence: 503) ends it here
        try:
            native = await self.mapper.native_token(claims.sub, not_after=claims.exp, checked=False)
        except UnknownUser as exc:
            await verdict  # the vault's refusal, if any, comes first (as in the strict order)
            raise _refused_by_app(claims, exc) from None
        except BaseException:
            verdict.cancel()
            raise
        as_subject = _as_subject(scope, native, claims)
        scrubbed = _scrub(send, native)
        released = False
        withheld: _Refusal | None = None

        async def gated(message: Message) -> None:
            nonlocal released, withheld
            if not released:
                if withheld is None:
                    try:
                        role = await asyncio.shield(verdict)
                        await self._hold_to(role, claims, as_subject["state"])
                    except _Refusal as refusal:
                        withheld = refusal
                if withheld is not None:
                    raise ResponseWithheld("the vault refused the delegation token")
                released = True
            await scrubbed(message)

        try:
            await self.app(as_subject, receive, gated)
        except asyncio.CancelledError:
            verdict.cancel()
            raise
        except BaseException:
            if released:
                raise
            if withheld is not None:
                raise withheld from None
            await asyncio.wait([verdict])
            verdict.result()  # the vault's refusal, if any, is the answer; else the app's error
            raise
        if withheld is not None:  # the app swallowed ``ResponseWithheld``
            raise withheld
        if not released:  # the app sent nothing at all: the verdict is owed all the same
            await asyncio.wait([verdict])
            verdict.result()

    async def _hold_to(self, role: str | None, claims: Claims, state: dict[str, Any]) -> None:
        """The strict order's check of the app's user, after the fact: the user the app itself
        resolved for this request, if it says, must have the role the vault authorized;
        otherwise the mapper reads the user and checks it."""
        seen = self.mapper.resolved_role(state)
        if seen is None:
            try:
                await self.mapper.native_token(claims.sub, not_after=claims.exp, role=role)
            except UnknownUser as exc:
                raise _refused_by_app(claims, exc) from None
        elif role is not None and seen != role:
            raise _refused_by_app(claims, SubjectRoleChanged(ROLE_CHANGED))

    async def _verify(self, token: str, header: dict[str, Any] | None = None) -> Claims:
        now = int(self.now())
        claims = self.seen.get(token, now)
        if claims is not None:
            return claims
        kid: object = None
        try:
            if header is None:
                header = jws.read_header(token)
            kid = jws.check_header(token, header)  # refused anyway: no key fetch, no wait
            await self.keys.ensure(kid)
            claims = jws.verify(
                token,
                self.keys.cached,
                issuer=self.config.issuer,
                audience=self.config.audience,
                now=now,
                leeway=self.config.leeway_seconds,
                header=header,
            )
        except TokenError as exc:
            if isinstance(exc, UnknownKey) and isinstance(kid, str) and not self.keys.loaded:
                # No key set was ever fetched: this says nothing about the token (fail closed).
                raise _Refusal(
                    503, "vault_unavailable", "the vault's keys cannot be fetched; try again"
                ) from None
            raise _Refusal(401, exc.code, "the delegation token was refused") from None
        self.seen.put(token, claims)  # its expiry is the caller's check (and ends its entry)
        return claims

    async def _authorize(self, token: str, claims: Claims, scope: Scope) -> str:
        role = await self._introspected(token, claims, scope)
        try:
            return await self.mapper.native_token(claims.sub, not_after=claims.exp, role=role)
        except UnknownUser as exc:
            raise _refused_by_app(claims, exc) from None

    async def _introspected(self, token: str, claims: Claims, scope: Scope) -> str | None:
        """Steps 2 and 3: the vault's yes (the subject's role as it authorized it), or
        ``_Refusal``. The scope is checked here and at the vault, which records a denial."""
        method = scope["method"]
        path = scope["path"]
        allowed_here = self.scopes.allows(claims.scope, method, path)
        client = scope.get("client")
        answer = await self._introspect(token, method, path, client[0] if client else None)
        if not answer.get("active"):
            raise _Refusal(401, "revoked_token", "the delegation token is no longer active")
        if answer.get("sub") != claims.sub or answer.get("jti") != claims.jti:
            raise _Refusal(503, "unavailable", "the vault's answer does not match the token")
        if not allowed_here or answer.get("outcome") == "denied_scope":
            raise _Refusal(
                403, "scope_not_allowed", f"the token's scope does not allow {method} {path}"
            )
        role = answer.get("subject_role")
        return role if isinstance(role, str) else None

    async def _introspect(
        self, token: str, method: str, path: str, client_ip: str | None
    ) -> dict[str, Any]:
        body = {"token": token, "method": method, "path": path, "client_ip": client_ip}
        try:
            status, raw = await self.introspection.post_json(
                "/v1/introspect", body, bearer=self.config.credential
            )
        except VaultHttpError as exc:
            log.error("vault unreachable for introspection: %s", exc)
            raise _Refusal(
                503, "vault_unavailable", "the vault cannot be reached; try again"
            ) from None
        if status in (401, 403):
            # Not a verdict on the token: this service's own credential was refused. Fail closed,
            # and tell the operator what to fix.
            log.error(
                "the vault refused the verifier credential (HTTP %d): check that "
                "VAULT_VERIFIER_CREDENTIAL is a current credential of a principal with the "
                "verifier role",
                status,
            )
            raise _Refusal(
                503, "vault_unavailable", "the vault refused this service's credential; try again"
            )
        if status != 200:
            log.error("vault refused introspection: HTTP %d", status)
            raise _Refusal(503, "vault_unavailable", "the vault did not answer; try again")
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise _Refusal(503, "vault_unavailable", "the vault's answer was not a JSON object")
        return answer


def _refused_by_app(claims: Claims, exc: UnknownUser) -> _Refusal:
    """The refusal of a request the vault allowed (its ``token.used`` entry says so) that the
    app's side refuses (its user changed since the subjects were synced, or the token expired
    meanwhile): logged, so that the two can be matched, and answered 401."""
    log.warning(
        "delegated request refused after the vault allowed it (token.used jti %s): subject %s, "
        "%s: %s",
        claims.jti,
        claims.sub,
        exc.code,
        exc.description,
    )
    return _Refusal(401, exc.code, exc.description)


def _as_subject(scope: Scope, native: str, claims: Claims) -> Scope:
    # ``_scrub`` can only find the native credential in an uncompressed body, so the app is asked
    # for one (Open WebUI's CompressMiddleware would otherwise gzip/br/zstd it past the scrubber).
    headers = [
        (k, v)
        for k, v in scope["headers"]
        if k not in STRIPPED_REQUEST_HEADERS and k != b"accept-encoding"
    ]
    headers.append((b"accept-encoding", b"identity"))
    headers.append((b"authorization", f"Bearer {native}".encode("latin-1")))
    state = dict(scope.get("state") or {})
    state["delegation"] = {
        "sub": claims.sub,
        "act": claims.actor,
        "jti": claims.jti,
        "scope": claims.scope_text,
    }
    return {**scope, "headers": headers, "state": state}


def _scrub(send: Send, native: str) -> Send:
    """Wrap ``send`` so that the native credential never leaves in headers or body."""
    secret = native.encode("latin-1")
    # Same length as the secret: a Content-Length already sent for a streamed body stays true.
    mask = b"[redacted]".ljust(len(secret), b"*")[: len(secret)]
    buffering = False
    held = bytearray()
    pending = b""  # a streamed chunk's tail that may begin the secret, sent with the next chunk
    start: Message | None = None

    async def wrapped(message: Message) -> None:
        nonlocal buffering, pending, start
        if message["type"] == "http.response.start":
            headers = [
                (k, v.replace(secret, mask))
                for k, v in message.get("headers", ())
                if not (k.lower() == b"set-cookie" and v.lstrip().startswith(SESSION_COOKIES))
            ]
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            buffering = content_type.startswith(b"application/json")
            start = {**message, "headers": headers}
            if not buffering:
                await send(start)
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        body = message.get("body", b"")
        if not buffering:
            data = (pending + body).replace(secret, mask)
            keep = _secret_prefix_at_end(data, secret) if message.get("more_body", False) else 0
            pending = data[len(data) - keep :]
            await send({**message, "body": data[: len(data) - keep]})
            return
        held.extend(body)
        if message.get("more_body", False) or start is None:
            return
        cleaned = _without_secret(bytes(held), secret)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(cleaned)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": cleaned})

    return wrapped


def _secret_prefix_at_end(data: bytes, secret: bytes) -> int:
    """Length of the longest tail of ``data`` that is a proper prefix of ``secret`` (else 0)."""
    i = data.find(secret[:1], max(0, len(data) - len(secret) + 1))
    while i != -1:
        if secret.startswith(data[i:]):
            return len(data) - i
        i = data.find(secret[:1], i + 1)
    return 0


def _without_secret(body: bytes, secret: bytes) -> bytes:
    if secret not in body:
        return body
    try:
        document = json.loads(body)
    except ValueError:
        return body.replace(secret, b"[redacted]")
    if isinstance(document, dict):
        document = {
            k: v for k, v in document.items() if not (k == "token" and v == secret.decode())
        }
    cleaned = json.dumps(document).encode()
    return cleaned.replace(secret, b"[redacted]")
