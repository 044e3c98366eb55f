"""Compact JWS for delegation tokens: sign and verify with one fixed contract.

Verification takes nothing from the token that could choose how it is checked: the algorithm is
fixed (EdDSA over Ed25519), the key comes only from our own key set by ``kid`` (``jku``, ``x5u``,
``jwk`` headers are ignored), unknown critical headers are refused, and time is a parameter. It is
written against ``cryptography`` directly because that is the whole contract and because the
verifier runs on every delegated request (pyjwt's general decode costs ~1.7 raw verifies).
Signing is too, for the same reason on the issuing side: it produces exactly the bytes
``jwt.encode`` would (compact JSON, header members sorted), which the tests check.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.canonical import refuse_constant
from vault.crypto.keys import KeyPair
from vault.errors import (
    BadSignature,
    DisallowedAlgorithm,
    ExpiredToken,
    MalformedToken,
    TokenError,
    TokenNotYetValid,
    TokenTooLarge,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongTokenType,
)
from vault.tokens.claims import ALGORITHM, MAX_TOKEN_BYTES, TOKEN_TYPE, Claims, claims_from_payload

MAX_LEEWAY_SECONDS = 30
_ACCEPTED_TYPES = {TOKEN_TYPE, "application/" + TOKEN_TYPE}

KeyLookup = Callable[[str], Ed25519PublicKey | None]


# ``json.dumps`` with these arguments, without building an encoder on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_COMPACT_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def _compact(value: dict[str, Any], *, sort_keys: bool = False) -> str:
    text = (_COMPACT_SORTED if sort_keys else _COMPACT).encode(value)
    return b64url_encode(text.encode("ascii"))  # ensure_ascii: the text is ASCII


@functools.lru_cache(maxsize=64)
def _header_segment(kid: str) -> str:
    """The protected header of every token signed by ``kid``: the same bytes each time."""
    return _compact({"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": kid}, sort_keys=True)


def sign(claims: Claims, key: KeyPair) -> str:
    signing_input = f"{_header_segment(key.kid)}.{_compact(claims.to_payload())}"
    signature = b64url_encode(key.sign(signing_input.encode("ascii")))
    return f"{signing_input}.{signature}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise MalformedToken(f"duplicate member {name!r}")
        result[name] = value
    return result


# One decoder for every header and payload: ``json.loads`` with these hooks would build a new
# one per call, a few µs each on the middleware's path.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=refuse_constant)


def _json_object(segment: str, what: str) -> dict[str, Any]:
    # Strict UTF-8 (RFC 7515 §5.2): json.loads on bytes would also take UTF-16/32 and a BOM (a
    # BOM in the text is refused: it is not JSON whitespace). NaN/Infinity are not JSON (RFC
    # 8259). Deep nesting raises RecursionError: refuse it too.
    try:
        value = _DECODER.decode(b64url_decode(segment).decode("utf-8"))
    except MalformedToken:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedToken(f"{what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"{what} is not a JSON object")
    return value


_HEADERS: dict[str, dict[str, Any]] = {}  # header segment -> its parsed header (one per key)
_HEADERS_MAX = 64
_HEADER_KEPT_BYTES = 512  # ours are ~100 bytes
MAX_ROUTED_HEADER_BYTES = 8 * MAX_TOKEN_BYTES


def read_header(token: str) -> dict[str, Any]:
    """The unverified header, for routing only (is this one of ours?). Never trust it further.

    Only the header's size is limited here, and more loosely than a token's
    (``MAX_ROUTED_HEADER_BYTES``), so that an oversized token of ours, its header included, is
    still recognized as ours, and then refused by ``verify`` as too large.
    """
    head, sep, _ = token.partition(".")
    if len(head) > MAX_ROUTED_HEADER_BYTES:
        raise TokenTooLarge(f"token header is over {MAX_ROUTED_HEADER_BYTES} bytes")
    if not sep:
        raise MalformedToken("not a compact JWS")
    # Every token of one key has the same header segment: parse it once. A copy is returned,
    # so no caller can change what the next one reads. Only headers of a usual size are kept.
    found = _HEADERS.get(head)
    if found is None:
        found = _json_object(head, "header")
        if len(head) <= _HEADER_KEPT_BYTES:
            if len(_HEADERS) >= _HEADERS_MAX:
                _HEADERS.clear()
            _HEADERS[head] = found
    return dict(found)


def check_header(token: str, header: Mapping[str, Any], *, parts: int | None = None) -> str:
    """What needs no key: the token's size and form, and its header (``read_header(token)``);
    the kid it names, or the exact ``TokenError``. A verifier runs this before fetching keys
    for an unknown kid, so that a token refused anyway never waits for (or causes) a fetch."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenTooLarge(f"token is over {MAX_TOKEN_BYTES} bytes")
    if (token.count(".") + 1 if parts is None else parts) != 3:
        raise MalformedToken("not a compact JWS")
    if header.get("alg") != ALGORITHM:
        raise DisallowedAlgorithm(f"alg must be {ALGORITHM}")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
        raise WrongTokenType(f"typ must be {TOKEN_TYPE}")
    if "crit" in header:
        raise MalformedToken("critical header extensions are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("token has no kid")
    return kid


def verify_signature(
    token: str, lookup: KeyLookup, *, header: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """Check size, header and signature; return ``(kid, payload)``. Claims are not checked yet.

    ``header`` spares parsing the header again when the caller already has it: it must be
    ``read_header(token)`` of this very token (the signature covers the header's bytes, so a
    header of another token cannot make this one verify; it could only misroute the check).
    """
    parts = token.split(".")
    if header is None and len(parts) == 3 and len(token) <= MAX_TOKEN_BYTES:
        header = _json_object(parts[0], "header")
    kid = check_header(token, header or {}, parts=len(parts))
    public_key = lookup(kid)
    if public_key is None:
        raise UnknownKey("token is signed by a key this vault does not publish")
    _check_signature(parts, public_key)
    return kid, _json_object(parts[1], "payload")


def _check_signature(parts: list[str], public_key: Ed25519PublicKey) -> None:
    try:
        signature = b64url_decode(parts[2])
    except ValueError:
        raise MalformedToken("signature is not base64url") from None
    try:
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    except (InvalidSignature, UnicodeEncodeError):
        raise BadSignature("signature does not verify") from None


def signed_by_us(token: str, lookup: KeyLookup) -> dict[str, Any] | None:
    """The payload of a token that one of our keys signed (``{}`` if it is not a JSON object),
    whatever else its header says and whatever its size; ``None`` if none of ours signed it.

    For the record of a refused token only, never to accept one: ``verify_signature`` refuses a
    token by its type, a critical header or its size before checking the signature, and a token
    only the vault could have made is worth a record that a forgery is not.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = _json_object(parts[0], "header")
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or not kid:
            return None
        public_key = lookup(kid)
        if public_key is None:
            return None
        _check_signature(parts, public_key)
    except TokenError:
        return None
    try:
        return _json_object(parts[1], "payload")
    except TokenError:
        return {}


def check_claims(
    payload: dict[str, Any], *, issuer: str, audience: str, now: int, leeway: int
) -> Claims:
    """Check a signature-verified payload against the contract; return its claims."""
    if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise ValueError(f"leeway must be within 0..{MAX_LEEWAY_SECONDS} s")
    claims = claims_from_payload(payload)
    if claims.iss != issuer:
        raise WrongIssuer("token is from another issuer")
    if claims.aud != audience:
        raise WrongAudience("token is for another audience")
    if now >= claims.exp + leeway:
        raise ExpiredToken("token has expired")
    if claims.nbf > now + leeway or claims.iat > now + leeway:
        raise TokenNotYetValid("token is not valid yet")
    return claims


def verify(
    token: str,
    lookup: KeyLookup,
    *,
    issuer: str,
    audience: str,
    now: int,
    leeway: int,
    header: Mapping[str, Any] | None = None,
) -> Claims:
    """Verify a delegation token completely, or raise the exact ``TokenError`` leaf."""
    if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise ValueError(f"leeway must be within 0..{MAX_LEEWAY_SECONDS} s")
    _, payload = verify_signature(token, lookup, header=header)
    return check_claims(payload, issuer=issuer, audience=audience, now=now, leeway=leeway)
