"""Scopes: named sets of (method, path pattern) rules; "does this scope allow this request"."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from vault.crypto.canonical import NotCanonicalizable, canonical_json
from vault.errors import ConfigError, InvalidScope

ALL = "all"
DEFAULT_REQUEST_SCOPE = ("chat", "models:read")
# Who am I, under every scope: Open WebUI's route, and the same without its slash (which Open
# WebUI only redirects to the route).
ALWAYS_ALLOWED = (("GET", "/api/v1/auths/"), ("GET", "/api/v1/auths"))
# Never delegated, whatever the scope (``all`` included) and whatever a scope file says: what
# would turn a short-lived, scoped delegation into the user's lasting credentials or sessions.
# Open WebUI 0.12.4: the raw API key (read, create, delete), password and MFA changes, sign-in,
# sign-up and sign-out, OAuth sessions and token exchange.
NEVER_DELEGATED = (
    "* /api/v1/auths/api_key",
    "* /api/v1/auths/update/password",
    "* /api/v1/auths/mfa/**",
    "* /api/v1/auths/signin",
    "* /api/v1/auths/signup",
    "* /api/v1/auths/signout",
    "* /api/v1/auths/ldap",
    "* /api/v1/auths/add",
    "* /api/v1/auths/oauth/**",
    "* /oauth/**",
)
# What every recorded table refuses, whatever it says (``table_from_record``): the never-rules of
# the version that began recording tables. Frozen: a later version that adds to NEVER_DELEGATED
# records its own rules in its tables, and must not turn uses that earlier tables rightly
# allowed into violations.
NEVER_FLOOR = NEVER_DELEGATED
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"}
# Rules in one table, never-rules included, at most: each use is checked against every rule (and
# a never-rule against each spelling of its path), so verification stays fast on any table.
MAX_RULES = 1000
MAX_SCOPE_CHARS = 1000  # a requested scope string


@dataclass(frozen=True, slots=True)
class Rule:
    method: str
    segments: tuple[str, ...]  # pattern split on "/", without the leading empty segment

    @classmethod
    def parse(cls, text: str) -> Rule:
        method, _, pattern = text.strip().partition(" ")
        method = method.upper()
        if method not in _METHODS or not pattern.startswith("/"):
            raise ValueError(f"rule {text!r} is not 'METHOD /path'")
        segments = tuple(pattern[1:].split("/"))
        if "**" in segments[:-1]:
            raise ValueError(f"rule {text!r}: '**' may only end a pattern")
        return cls(method, segments)

    @property
    def text(self) -> str:
        """The rule as a scope file spells it: ``METHOD /path``."""
        return f"{self.method} /{'/'.join(self.segments)}"

    def matches(self, method: str, path_segments: tuple[str, ...]) -> bool:
        if self.method not in ("*", method, _as_rules_name(method)):
            return False
        pattern = self.segments
        if pattern and pattern[-1] == "**":
            prefix = pattern[:-1]
            if len(path_segments) < len(prefix):
                return False
            return _segments_match(prefix, path_segments[: len(prefix)])
        return len(pattern) == len(path_segments) and _segments_match(pattern, path_segments)


def _as_rules_name(method: str) -> str:
    """``HEAD`` is the ``GET`` without its body (RFC 9110 §9.3.2): a rule for ``GET`` is one for
    ``HEAD`` too, a grant and a never-rule alike (and a rule for ``HEAD`` still is one)."""
    return "GET" if method == "HEAD" else method


def _segments_match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    return all((p == "*" and s != "") or p == s for p, s in zip(pattern, path, strict=True))


def split_path(path: str) -> tuple[str, ...] | None:
    """Segments of an absolute path; ``None`` for paths no rule may match (dot segments)."""
    if not path.startswith("/"):
        return None
    segments = tuple(path[1:].split("/"))
    if any(s in {".", ".."} for s in segments):
        return None
    return segments


_OTHER_SPELLING = re.compile(r"[?#%;A-Z]")
MAX_DECODINGS = 8  # a path still changing after this many rounds of decoding is refused
MAX_FORMS = 64


def never_forms(path: str) -> tuple[str, ...] | None:
    """``path`` and the other paths a server might take it for, against which never-rules are
    checked too: a verifier other than ours may send the request target as it came (with its
    query, fragment, percent-escapes or ``;`` parameters, in another case). Our middleware sends
    the path its app routes on, so this only ever refuses more. ``None`` (refused) for a path
    whose spellings have not settled after ``MAX_DECODINGS`` rounds or are too many."""
    if not _OTHER_SPELLING.search(path):
        return (path,)
    forms = {path}
    for _ in range(MAX_DECODINGS):  # decoding again may show more: a query in "%3F", say
        before = len(forms)
        forms |= {form.split("?", 1)[0].split("#", 1)[0] for form in forms}
        forms |= {unquote(form) for form in forms}
        forms |= {"/".join(part.split(";", 1)[0] for part in form.split("/")) for form in forms}
        forms |= {form.lower() for form in forms}
        if len(forms) == before:
            return tuple(sorted(form for form in forms if form.startswith("/")))
        if len(forms) > MAX_FORMS:
            break
    return None


@dataclass(frozen=True, slots=True)
class ScopeTable:
    scopes: Mapping[str, tuple[Rule, ...]]
    never: tuple[Rule, ...] = ()  # refused under every scope (NEVER_DELEGATED and the file's)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.scopes)

    def record(self) -> dict[str, Any]:
        """The table as the audit log records it (``scopes.loaded``): every rule in force, the
        never-rules included, as ``METHOD /path`` text; ``table_from_record`` reads it back."""
        return {
            "scopes": {name: [rule.text for rule in rules] for name, rules in self.scopes.items()},
            "never": [rule.text for rule in self.never],
        }

    def parse_request(self, text: str | None) -> tuple[str, ...]:
        """A requested ``scope`` string → known names, in order, without repeats."""
        if text is None:
            return DEFAULT_REQUEST_SCOPE
        if len(text) > MAX_SCOPE_CHARS:
            raise InvalidScope(f"scope must be at most {MAX_SCOPE_CHARS} characters")
        names = [name for name in text.split(" ") if name]
        if not names:
            raise InvalidScope("scope must name one or more scopes, space-separated")
        unknown = sorted({name for name in names if name not in self.scopes})
        if unknown:
            raise InvalidScope(f"unknown scope: {' '.join(unknown)}")
        return tuple(dict.fromkeys(names))

    def allows(self, granted: Iterable[str], method: str, path: str) -> bool:
        return any_allows((self,), tuple(granted), method, path)

    def _grants(self, granted: tuple[str, ...], method: str, segments: tuple[str, ...]) -> bool:
        return any(
            rule.matches(method, segments) for name in granted for rule in self.scopes.get(name, ())
        )

    def _refuses(self, method: str, solid_forms: tuple[tuple[str, ...], ...]) -> bool:
        return any(rule.matches(method, form) for form in solid_forms for rule in self.never)


def any_allows(
    tables: Iterable[ScopeTable], granted: tuple[str, ...], method: str, path: str
) -> bool:
    """Whether one of ``tables`` allows ``method path`` under the scopes ``granted``: a rule of
    one of those scopes matches it and none of the same table's never-rules does. Grants are
    matched on the path as given: a ``?`` in it is part of a segment, not the start of a query
    (our middleware sends the decoded path, where ``?`` is a ``%3F``), so a path with a query
    string fails exact rules, closed. Never-rules are matched on every spelling of it, worked
    out once, and only if some table's scopes match."""
    segments = split_path(path)
    if segments is None:
        return False
    method = method.upper()
    always = (_as_rules_name(method), path) in ALWAYS_ALLOWED
    candidates = [t for t in tables if always or t._grants(granted, method, segments)]
    if not candidates:
        return False
    # Never-rules cover everything below them, and empty segments ("//", a trailing "/")
    # cannot slip past them; nor can another spelling of a never-delegated path.
    forms = never_forms(path)
    if forms is None:
        return False  # still escaped after MAX_DECODINGS: nothing routes that honestly
    solid: list[tuple[str, ...]] = []
    for form in forms:
        parts = split_path(form)
        if parts is None:  # "%2e%2e": a dot segment once decoded, as a proxy may resolve it
            return False
        solid.append(tuple(segment for segment in parts if segment))
    return any(not table._refuses(method, tuple(solid)) for table in candidates)


def _recordable(name: str) -> bool:
    """Whether the audit log can record a scope of this name (canonical JSON: no lone
    surrogate, nothing beyond U+FFFF in a member name)."""
    try:
        canonical_json({name: None})
    except NotCanonicalizable:
        return False
    return True


def _subtree(rule: Rule) -> Rule:
    """``/a/b`` as ``/a/b/**``: a never-rule refuses the path and everything below it."""
    if rule.segments and rule.segments[-1] == "**":
        return rule
    return Rule(rule.method, (*rule.segments, "**"))


def _table_from_toml(document: Mapping[str, Any], source: str) -> ScopeTable:
    raw = document.get("scopes")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: needs a [scopes.NAME] table")
    scopes: dict[str, tuple[Rule, ...]] = {}
    for name, body in raw.items():
        if not name or " " in name or not isinstance(body, dict) or not _recordable(name):
            raise ConfigError(f"{source}: bad scope {name!r}")
        allow = body.get("allow")
        if not isinstance(allow, list) or not all(isinstance(r, str) for r in allow):
            raise ConfigError(f'{source}: scope {name!r} needs allow = ["METHOD /path", ...]')
        try:
            scopes[name] = tuple(Rule.parse(rule) for rule in allow)
        except ValueError as exc:
            raise ConfigError(f"{source}: scope {name!r}: {exc}") from None
    extra = (
        document.get("never", {}).get("deny", []) if isinstance(document.get("never"), dict) else []
    )
    if not isinstance(extra, list) or not all(isinstance(r, str) for r in extra):
        raise ConfigError(f'{source}: [never] needs deny = ["METHOD /path", ...]')
    try:
        never = tuple(_subtree(Rule.parse(rule)) for rule in (*NEVER_DELEGATED, *extra))
    except ValueError as exc:
        raise ConfigError(f"{source}: [never]: {exc}") from None
    if len(never) + sum(len(rules) for rules in scopes.values()) > MAX_RULES:
        raise ConfigError(f"{source}: more than {MAX_RULES} rules")
    return ScopeTable(scopes, never)


def table_from_record(data: object) -> ScopeTable:
    """The table a ``scopes.loaded`` entry recorded (``ScopeTable.record``); ``ValueError`` for
    anything else, as ``load_table`` would refuse it. Its never-rules are those recorded and,
    whatever the record says, this version's ``NEVER_DELEGATED``."""
    if not isinstance(data, dict) or set(data) != {"scopes", "never"}:
        raise ValueError("a recorded scope table has members scopes and never, and no other")
    raw, never = data["scopes"], data["never"]
    if not isinstance(raw, dict) or not raw or not isinstance(never, list):
        raise ValueError("scopes must be a non-empty object, never a list")
    count = len(never) + sum(len(rules) for rules in raw.values() if isinstance(rules, list))
    if count > MAX_RULES:
        raise ValueError(f"more than {MAX_RULES} rules")
    scopes: dict[str, tuple[Rule, ...]] = {}
    for name, rules in raw.items():
        if not name or " " in name or not isinstance(rules, list):
            raise ValueError(f"scope {name!r} is not a name with a list of rules")
        scopes[name] = _rules(rules)
    floor = tuple(Rule.parse(text) for text in NEVER_FLOOR)
    recorded = tuple(dict.fromkeys(_subtree(rule) for rule in (*_rules(never), *floor)))
    return ScopeTable(scopes, recorded)


def _rules(texts: list[Any]) -> tuple[Rule, ...]:
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("a rule is a string 'METHOD /path'")
    return tuple(Rule.parse(text) for text in texts)


def default_table() -> ScopeTable:
    text = resources.files("vault.policy").joinpath("default_scopes.toml").read_text("utf-8")
    return _table_from_toml(tomllib.loads(text), "built-in scope table")


def load_table(path: Path | None) -> ScopeTable:
    if path is None:
        return default_table()
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"scope file {path}: {exc}") from None
    return _table_from_toml(document, f"scope file {path}")
