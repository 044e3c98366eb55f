"""vault.policy.scopes: the built-in table (SPEC §9), rule matching, requests, TOML loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from vault.errors import ConfigError, InvalidScope
from vault.policy.scopes import (
    ALL,
    DEFAULT_REQUEST_SCOPE,
    MAX_RULES,
    Rule,
    ScopeTable,
    any_allows,
    default_table,
    load_table,
    never_forms,
    split_path,
    table_from_record,
)

TABLE = default_table()
SPEC_SCOPES = ("chat", "models:read", "chats:read", "files", "read", "all")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Path segments a client may send: never "." or "..", possibly empty (a doubled or final slash).
segments = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="/"), max_size=8
).filter(lambda s: s not in {".", ".."})
paths = st.lists(segments, max_size=6).map(lambda parts: "/" + "/".join(parts))


def table_from(tmp_path: Path, text: str) -> ScopeTable:
    path = tmp_path / "scopes.toml"
    path.write_text(text, encoding="utf-8")
    return load_table(path)


# --- the built-in table ------------------------------------------------------------------------


def test_default_table_has_the_spec_scopes():
    assert set(SPEC_SCOPES) <= set(TABLE.names)
    assert ALL == "all"


def test_load_table_without_a_file_is_the_default():
    assert load_table(None) == TABLE


def test_default_request_scope():
    assert DEFAULT_REQUEST_SCOPE == ("chat", "models:read")
    assert set(DEFAULT_REQUEST_SCOPE) <= set(TABLE.names)


@pytest.mark.parametrize("name", TABLE.names)
def test_who_am_i_is_allowed_under_every_scope(name):
    assert TABLE.allows([name], "GET", "/api/v1/auths/")
    assert TABLE.allows([name], "get", "/api/v1/auths/")


def test_who_am_i_is_allowed_even_with_no_scope():
    assert TABLE.allows([], "GET", "/api/v1/auths/")
    assert TABLE.allows([], "GET", "/api/v1/auths")  # Open WebUI redirects it to the route
    assert TABLE.allows([], "HEAD", "/api/v1/auths/")
    assert not TABLE.allows([], "GET", "/api/v1/auths%3F/api_key")
    assert not TABLE.allows([], "GET", "/api/v1/auths?/api_key")


def test_a_get_rule_is_a_head_rule_and_nothing_more():
    """HEAD is the GET without its body: a grant for GET grants HEAD; nothing else does."""
    assert TABLE.allows(["models:read"], "HEAD", "/api/models")
    assert TABLE.allows(["read"], "head", "/api/v1/chats/x")
    assert not TABLE.allows(["chat"], "HEAD", "/api/chat/completions")  # a POST rule
    assert not TABLE.allows(["chat"], "HEAD", "/api/v1/auths/signin")
    assert not Rule.parse("POST /x").matches("HEAD", ("x",))
    assert Rule.parse("GET /x").matches("HEAD", ("x",))
    assert Rule.parse("HEAD /x").matches("HEAD", ("x",))  # a rule for HEAD is still one
    assert not Rule.parse("HEAD /x").matches("GET", ("x",))


def test_rules_for_head_in_a_scope_file_still_grant_and_refuse(tmp_path: Path) -> None:
    table = table_from(
        tmp_path,
        "[scopes.peek]\n"
        'allow = ["HEAD /api/v1/files/**"]\n'
        "[scopes.read]\n"
        'allow = ["GET /api/**"]\n'
        "[never]\n"
        'deny = ["HEAD /api/v1/secret"]\n',
    )
    assert table.allows(["peek"], "HEAD", "/api/v1/files/a")
    assert not table.allows(["peek"], "GET", "/api/v1/files/a")
    assert table.allows(["read"], "HEAD", "/api/v1/other")
    assert not table.allows(["read"], "HEAD", "/api/v1/secret")  # the never-rule for HEAD
    assert table.allows(["read"], "GET", "/api/v1/secret")


@pytest.mark.parametrize("method", ["GET", "HEAD"], ids=["get", "head"])
def test_a_never_rule_for_get_refuses_head_too(tmp_path: Path, method: str) -> None:
    table = table_from(
        tmp_path,
        '[scopes.all]\nallow = ["* /**"]\n[never]\ndeny = ["GET /api/v1/secret"]\n',
    )
    assert not table.allows(["all"], method, "/api/v1/secret")
    assert table.allows(["all"], "POST", "/api/v1/secret")


@pytest.mark.parametrize(
    ("scope", "path", "allowed"),
    [
        ("models:read", "/api/models?id=x", False),  # exact rules: a query fails them, closed
        ("models:read", "/api/models/base?x=1", True),  # "**" takes the segment as it is
        ("read", "/api/v1/models?id=x", True),
        ("models:read", "/ollama/api/tags%3F/0", False),  # decoded, "?" is part of a segment
        ("read", "/api/v1/auths/api_key?x=1", False),  # never-delegated, in every spelling
        ("read", "/api/v1/auths%3F/api_key", True),  # "read" is any GET; not the key route
    ],
)
def test_a_question_mark_is_part_of_the_path_for_grants(scope, path, allowed):
    """Our middleware sends the decoded path, where a ``?`` is a ``%3F`` inside a segment: a
    grant matched on what comes before it would match a path the app does not route on."""
    assert TABLE.allows([scope], "GET", path) is allowed


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/auths/"),
        ("DELETE", "/api/v1/auths/"),
        ("GET", "/api/v1/auths/signin"),
        ("GET", "/api/v1/auths/../auths/"),
    ],
)
def test_who_am_i_exception_is_exactly_one_request(method, path):
    assert not TABLE.allows(["chat"], method, path)


def test_nothing_else_without_a_scope():
    assert not TABLE.allows([], "GET", "/api/models")
    assert not TABLE.allows(["no-such-scope"], "GET", "/api/models")


@pytest.mark.parametrize(
    ("scope", "method", "path", "allowed"),
    [
        ("chat", "POST", "/api/chat/completions", True),
        ("chat", "post", "/api/chat/completions", True),
        ("chat", "POST", "/api/v1/chat/completions", True),
        ("chat", "POST", "/openai/chat/completions", True),
        ("chat", "POST", "/ollama/api/chat", True),
        ("chat", "GET", "/api/chat/completions", False),
        ("chat", "GET", "/api/v1/chats/", False),
        ("chat", "GET", "/api/v1/chats/abc", False),
        ("chat", "POST", "/api/chat/completions/extra", False),
        ("chat", "POST", "/api/chat/completions/", False),
        ("chat", "POST", "/api/chat", False),
        ("chat", "GET", "/api/models", False),
        ("chat", "DELETE", "/api/v1/files/1", False),
        ("models:read", "GET", "/api/models", True),
        ("models:read", "GET", "/api/models/base", True),
        ("models:read", "GET", "/api/v1/models/model/profile/image", True),
        ("models:read", "GET", "/openai/models", True),
        ("models:read", "POST", "/api/models", False),
        ("models:read", "POST", "/api/v1/models/create", False),
        ("models:read", "GET", "/api/modelsX", False),
        ("chats:read", "GET", "/api/v1/chats/", True),
        ("chats:read", "GET", "/api/v1/chats/abc", True),
        ("chats:read", "GET", "/api/v1/chats", True),
        ("chats:read", "POST", "/api/v1/chats/new", False),
        ("chats:read", "DELETE", "/api/v1/chats/abc", False),
        ("chats:read", "GET", "/api/v1/chatsX", False),
        ("chats:read", "POST", "/api/chat/completions", False),
        ("files", "GET", "/api/v1/files/", True),
        ("files", "POST", "/api/v1/files/", True),
        ("files", "DELETE", "/api/v1/files/abc", True),
        ("files", "PUT", "/api/v1/files/abc", False),
        ("files", "GET", "/api/v1/chats/", False),
        ("read", "GET", "/api/v1/chats/", True),
        ("read", "GET", "/api/models", True),
        ("read", "GET", "/api/v1/users/", True),
        ("read", "POST", "/api/chat/completions", False),
        ("read", "GET", "/openai/models", False),
        ("read", "GET", "/ollama/api/tags", False),
        ("all", "DELETE", "/api/v1/users/abc", True),
        ("all", "POST", "/api/v1/auths/signup", False),  # never delegated
        ("all", "POST", "/api/v1/auths/update/profile", True),
        ("all", "PATCH", "/", True),
    ],
)
def test_default_rules(scope, method, path, allowed):
    assert TABLE.allows([scope], method, path) is allowed


def test_scopes_combine():
    granted = TABLE.parse_request("chat chats:read")
    assert TABLE.allows(granted, "POST", "/api/chat/completions")
    assert TABLE.allows(granted, "GET", "/api/v1/chats/abc")
    assert not TABLE.allows(granted, "POST", "/api/v1/chats/new")


def _no_dot_segment_in_any_spelling(path: str) -> bool:
    forms = never_forms(path)
    return forms is not None and all(split_path(form) is not None for form in forms)


@given(path=paths.map(lambda p: "/api" + p))
def test_read_allows_any_get_under_api_and_nothing_else(path):
    # "/api/.;" or "/api/%2e" is a dot segment once a server reads it: refused under any scope
    # (test_a_dot_segment_in_any_spelling_is_refused), so not "any GET under /api"
    assume(_no_dot_segment_in_any_spelling(path))
    assert TABLE.allows(["read"], "GET", path)
    assert TABLE.allows(["read"], "HEAD", path)  # the GET without its body
    for method in METHODS:
        if method not in {"GET", "HEAD"}:
            assert not TABLE.allows(["read"], method, path)


@given(method=st.sampled_from(METHODS), path=paths)
def test_all_allows_everything(method, path):
    assert TABLE.allows(["all"], method, path)


@given(
    method=st.sampled_from(METHODS),
    before=st.lists(segments, max_size=3),
    after=st.lists(segments, max_size=3),
    dots=st.sampled_from([".", ".."]),
    scope=st.sampled_from(TABLE.names),
)
def test_dot_segments_never_match(method, before, after, dots, scope):
    path = "/" + "/".join([*before, dots, *after])
    assert split_path(path) is None
    assert not TABLE.allows([scope], method, path)
    assert not TABLE.allows(list(TABLE.names), method, path)


@pytest.mark.parametrize(
    "path",
    [
        "/api/../api/chat/completions",
        "/api/chat/completions/..",
        "/api/./chat/completions",
        "/./api/v1/auths/",
        "/api/v1/auths/..",
        "/..",
        "api/v1/auths/",
        "",
    ],
)
def test_dot_segments_and_relative_paths_are_refused(path):
    for name in TABLE.names:
        assert not TABLE.allows([name], "POST", path)
        assert not TABLE.allows([name], "GET", path)


def test_split_path():
    assert split_path("/") == ("",)
    assert split_path("/api/v1/chats/") == ("api", "v1", "chats", "")
    assert split_path("/a/.../b") == ("a", "...", "b")  # three dots is an ordinary name
    assert split_path("/a/..b") == ("a", "..b")
    assert split_path("/a/../b") is None
    assert split_path("relative") is None


# --- pattern semantics -------------------------------------------------------------------------

PATTERNS = """
[scopes.one]
allow = ["GET /api/v1/chats/*", "POST /api/*/x"]

[scopes.rest]
allow = ["GET /api/v1/files/**"]

[scopes.root]
allow = ["get /"]

[scopes.any-method]
allow = ["* /api/ping"]
"""


@pytest.mark.parametrize(
    ("scope", "method", "path", "allowed"),
    [
        ("one", "GET", "/api/v1/chats/abc", True),
        ("one", "GET", "/api/v1/chats/a b", True),
        ("one", "GET", "/api/v1/chats/", False),  # "*" never matches an empty segment
        ("one", "GET", "/api/v1/chats", False),
        ("one", "GET", "/api/v1/chats/a/b", False),  # nor two segments
        ("one", "GET", "/api/v1/chats/abc/", False),
        ("one", "POST", "/api/a/x", True),
        ("one", "POST", "/api//x", False),
        ("one", "POST", "/api/a/b/x", False),
        ("rest", "GET", "/api/v1/files", True),  # "**" matches nothing, too
        ("rest", "GET", "/api/v1/files/", True),
        ("rest", "GET", "/api/v1/files/a/b/c", True),
        ("rest", "GET", "/api/v1/filesystem", False),
        ("rest", "GET", "/api/v1", False),
        ("root", "GET", "/", True),
        ("root", "GET", "/x", False),
        ("any-method", "DELETE", "/api/ping", True),
        ("any-method", "OPTIONS", "/api/ping", True),
        ("any-method", "GET", "/api/pong", False),
    ],
)
def test_pattern_semantics(tmp_path, scope, method, path, allowed):
    table = table_from(tmp_path, PATTERNS)
    assert table.allows([scope], method, path) is allowed


@given(segment=segments)
def test_star_matches_exactly_one_non_empty_segment(segment):
    rule = Rule.parse("GET /a/*/b")
    assert rule.matches("GET", ("a", segment, "b")) is (segment != "")
    assert not rule.matches("GET", ("a", "b"))
    assert not rule.matches("GET", ("a", segment, segment, "b"))


def test_rule_parse():
    assert Rule.parse("get /api/**") == Rule("GET", ("api", "**"))
    assert Rule.parse("  POST /x  ") == Rule("POST", ("x",))
    assert Rule.parse("* /**") == Rule("*", ("**",))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "GET",
        "GET api/models",
        "GET  /api/models",  # two spaces: the pattern would not start with "/"
        "FETCH /api/models",
        "/api/models",
        "GET /api/**/models",
        "GET /**/x",
        "GET /a/**/**",
    ],
)
def test_rule_parse_refuses(text):
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract is ValueError
        Rule.parse(text)


# --- parse_request -----------------------------------------------------------------------------


def test_parse_request_default():
    assert TABLE.parse_request(None) == ("chat", "models:read")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chat", ("chat",)),
        ("read chat", ("read", "chat")),
        ("chat chat models:read chat", ("chat", "models:read")),
        ("  chat   files ", ("chat", "files")),
        ("all", ("all",)),
    ],
)
def test_parse_request(text, expected):
    assert TABLE.parse_request(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "   ", "nope", "chat nope", "CHAT", "chat\tread", "chat,read", "chat " * 201],
)
def test_parse_request_refuses(text):
    with pytest.raises(InvalidScope) as info:
        TABLE.parse_request(text)
    assert type(info.value) is InvalidScope
    assert info.value.code == "invalid_scope"


@given(st.lists(st.sampled_from(TABLE.names), min_size=1, max_size=12))
def test_parse_request_dedupes_and_keeps_order(names):
    parsed = TABLE.parse_request(" ".join(names))
    assert parsed == tuple(dict.fromkeys(names))


# --- load_table --------------------------------------------------------------------------------


def test_load_table_from_toml(tmp_path):
    table = table_from(
        tmp_path,
        """
[scopes.ping]
description = "just ping"
allow = ["GET /api/ping"]

[scopes."models:read"]
allow = ["GET /api/models"]
""",
    )
    assert table.names == ("ping", "models:read")
    assert table.allows(["ping"], "GET", "/api/ping")
    assert not table.allows(["ping"], "GET", "/api/models")
    assert table.allows(["ping"], "GET", "/api/v1/auths/")  # who am I, in any table
    assert table.parse_request("ping") == ("ping",)
    with pytest.raises(InvalidScope):
        table.parse_request("chat")


def test_a_scope_may_allow_nothing_but_who_am_i(tmp_path):
    table = table_from(tmp_path, "[scopes.whoami]\nallow = []\n")
    assert table.allows(["whoami"], "GET", "/api/v1/auths/")
    assert not table.allows(["whoami"], "GET", "/api/models")


BAD_FILES = {
    "not-toml": "this is = = not toml",
    "no-scopes": 'title = "x"\n',
    "scopes-not-a-table": 'scopes = "chat"\n',
    "scopes-empty": "[scopes]\n",
    "scope-not-a-table": "[scopes]\nchat = 1\n",
    "no-allow": '[scopes.chat]\ndescription = "x"\n',
    "allow-not-a-list": '[scopes.chat]\nallow = "GET /x"\n',
    "allow-holds-int": "[scopes.chat]\nallow = [1]\n",
    "bad-method": '[scopes.chat]\nallow = ["FETCH /x"]\n',
    "relative-pattern": '[scopes.chat]\nallow = ["GET x"]\n',
    "double-star-inside": '[scopes.chat]\nallow = ["GET /api/**/x"]\n',
    "name-with-space": '[scopes."a b"]\nallow = ["GET /x"]\n',
    "empty-name": '[scopes.""]\nallow = ["GET /x"]\n',
}


@pytest.mark.parametrize("text", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_scope_files(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        table_from(tmp_path, text)
    assert type(info.value) is ConfigError


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_table(tmp_path / "nope.toml")
    assert type(info.value) is ConfigError


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError):
        load_table(tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "scopes.toml"
    path.write_bytes(b'[scopes.chat]\nallow = ["GET /\xff"]\n')
    with pytest.raises(ConfigError):
        load_table(path)


@pytest.mark.parametrize("scope", ["all", "read", "chat", "chats", "files", "models:read"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/auths/api_key"),  # the user's raw, lasting sk- key
        ("POST", "/api/v1/auths/api_key"),
        ("DELETE", "/api/v1/auths/api_key"),
        ("GET", "/api/v1/auths/api_key/"),  # trailing slash
        ("GET", "/api//v1/auths//api_key"),  # empty segments
        ("POST", "/api/v1/auths/update/password"),
        ("POST", "/api/v1/auths/mfa/enroll/start"),
        ("POST", "/api/v1/auths/mfa/recovery/codes"),
        ("POST", "/api/v1/auths/signout"),
        ("POST", "/api/v1/auths/oauth/google/token/exchange"),
        ("GET", "/oauth/google/login"),
    ],
)
def test_credentials_and_sessions_are_never_delegated(scope, method, path):
    assert not default_table().allows([scope], method, path)


def test_a_scope_file_cannot_lift_the_never_list_but_can_extend_it(tmp_path):
    path = tmp_path / "scopes.toml"
    path.write_text(
        '[scopes.everything]\nallow = ["* /**"]\n[never]\ndeny = ["DELETE /api/v1/chats/**"]\n'
    )
    table = load_table(path)
    assert table.allows(["everything"], "GET", "/api/v1/chats/")
    assert not table.allows(["everything"], "DELETE", "/api/v1/chats/x")
    assert not table.allows(["everything"], "GET", "/api/v1/auths/api_key")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/auths/api_key?x=1",  # the request target with its query
        "/api/v1/auths/api_key#x",
        "/api/v1/auths/%61pi_key",  # percent-escapes, as a raw target carries them
        "/api/v1/auths%2Fapi_key",
        "/api/v1/auths/%2561pi_key",  # escaped twice
        "/api/v1/auths/api_key%3Fx",
        "/api/v1/auths/api_key;x",  # a path parameter
        "/api/v1/auths/API_KEY",  # another case
        "/API/v1/auths/api_key",
        "/api/v1/auths/mfa%2Fenroll",
        "/api/v1/auths/x/%2e%2e/api_key",  # a dot segment once decoded, as a proxy resolves it
        "/api/v1/auths/x/%2E%2E/api_key",
        "/api/v1/auths/.%2e/auths/api_key",
        "/api/v1/auths/%252561pi_key",  # escaped three times
        "/api/v1/auths/%" + "25" * 20 + "61pi_key",  # escaped more often than is decoded
    ],
)
def test_never_delegated_paths_are_refused_in_every_spelling(path):
    """A verifier other than ours may send the request target as it came: the never-list holds
    whatever spelling a server might route to the same endpoint."""
    for scope in ("all", "read"):
        assert not default_table().allows([scope], "GET", path), (scope, path)


@pytest.mark.parametrize(
    ("scope", "method", "path"),
    [
        ("all", "GET", "/api/v1/files/100%25.txt"),
        ("all", "GET", "/api/v1/chats/ABC-123"),
        ("all", "GET", "/api/v1/auths/"),
        ("read", "GET", "/api/v1/models?id=x"),
        ("chat", "POST", "/api/chat/completions"),
    ],
)
def test_other_spellings_of_other_paths_are_judged_as_before(scope, method, path):
    assert default_table().allows([scope], method, path)


def test_never_forms():
    assert never_forms("/api/v1/chats/x") == ("/api/v1/chats/x",)  # the usual: nothing to add
    assert never_forms("/x/%" + "25" * 20 + "41") is None  # has not settled: refused
    assert default_table().allows(["all"], "GET", "/x/%%%41")  # settles: "/x/%%a"
    assert "/api/v1/auths/api_key" in never_forms("/api/v1/auths/%41PI_key;v=1?q#f")
    assert all(form.startswith("/") for form in never_forms("/a%2F..%3F?b"))


# --- the table as the audit log records it (scopes.loaded) -------------------------------------


def test_a_table_read_back_from_its_record_is_the_same_table(tmp_path: Path) -> None:
    custom = tmp_path / "scopes.toml"
    custom.write_text(
        '[scopes.tickets]\nallow = ["GET /api/tickets/**", "POST /api/tickets"]\n'
        '[scopes.root]\nallow = ["GET /"]\n[never]\ndeny = ["DELETE /api/tickets/**"]\n'
    )
    for table in (default_table(), load_table(custom)):
        record = table.record()
        assert json.loads(json.dumps(record)) == record  # plain JSON, as the log stores it
        assert table_from_record(record) == table


def test_a_record_keeps_the_never_rules_in_force() -> None:
    record = default_table().record()
    assert "* /api/v1/auths/api_key/**" in record["never"]
    assert table_from_record(record).never == default_table().never


def test_a_record_too_large_is_not_believed() -> None:
    record = {"scopes": {"x": ["GET /a"] * (MAX_RULES + 1)}, "never": []}
    with pytest.raises(ValueError, match="more than"):
        table_from_record(record)


def test_a_record_never_lifts_the_never_delegated_paths() -> None:
    table = table_from_record({"scopes": {"wide": ["* /**"]}, "never": []})
    assert table.never == default_table().never
    assert not table.allows(["wide"], "GET", "/api/v1/auths/api_key")
    assert table.allows(["wide"], "GET", "/api/v1/chats/")


def test_a_scope_file_of_too_many_rules_is_refused(tmp_path: Path) -> None:
    """Every use is checked against every rule: a table is bounded, as the recorded ones are."""
    rules = ", ".join(f'"GET /api/x/{n}"' for n in range(MAX_RULES))
    custom = tmp_path / "scopes.toml"
    custom.write_text(f"[scopes.big]\nallow = [{rules}]\n")
    with pytest.raises(ConfigError, match="more than"):
        load_table(custom)


tables = st.lists(
    st.builds(
        lambda rules, never: ScopeTable({"s": tuple(rules)}, tuple(never)),
        st.lists(
            st.sampled_from([Rule.parse(r) for r in ("GET /api/**", "* /a/*", "POST /a/b")]),
            max_size=3,
        ),
        st.lists(
            st.sampled_from([Rule.parse(r) for r in ("* /a/b/**", "GET /api/x/**")]), max_size=2
        ),
    ),
    max_size=4,
)


@given(tables=tables, method=st.sampled_from(METHODS), path=paths)
def test_any_allows_is_any_table_allowing(tables: list[ScopeTable], method: str, path: str) -> None:
    """One pass over several tables (the spellings of the path worked out once) answers as
    each table would on its own; a table's never-rules refuse only under that table."""
    for candidate in (path, "/a/b", "/a/%62", "/api/x/1", "/api/v1/auths/"):
        expected = any(table.allows(["s"], method, candidate) for table in tables)
        assert any_allows(tables, ("s",), method, candidate) == expected


def test_a_scope_name_the_log_cannot_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bad scope"):
        table_from(tmp_path, '[scopes."tickets\U0001f600"]\nallow = ["GET /api/tickets/**"]\n')


@pytest.mark.parametrize("path", ["/api/.;", "/api/%2e", "/api/x/.;v=1/y", "/api/%2E%2E/v1"])
def test_a_dot_segment_in_any_spelling_is_refused(path: str) -> None:
    assert not _no_dot_segment_in_any_spelling(path)
    assert not TABLE.allows(["read"], "GET", path)
    assert not TABLE.allows(["all"], "GET", path)
