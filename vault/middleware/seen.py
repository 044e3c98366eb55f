"""A bounded cache of tokens already verified, until their ``exp``: the second sight of a token
costs a dict lookup instead of a signature check. Revocation is still checked at the vault."""

from __future__ import annotations

from collections import OrderedDict

from vault.tokens.claims import Claims


class SeenTokens:
    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, Claims] = OrderedDict()

    def get(self, token: str, now: int) -> Claims | None:
        claims = self._entries.get(token)
        if claims is None:
            return None
        if now >= claims.exp:
            self._entries.pop(token, None)
            return None
        return claims

    def put(self, token: str, claims: Claims) -> None:
        self._entries[token] = claims
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)  # the oldest first
