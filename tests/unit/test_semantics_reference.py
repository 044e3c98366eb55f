"""vault.audit.semantics against its previous version (tests/unit/previous_semantics.py), and
the compact token book it now keeps.

The checker was rewritten for the bulk path: rows instead of entries, ``data`` parsed once,
timestamps as integers, a bounded cache of scope answers, a packed record per token. Whatever
the log, it must find the same violations, in the same order, with the same reasons and the
same total as before; random logs made of the entries the checker reads (with timestamps that
go backwards, reissued and unknown jtis, revocations, disabled principals, malformed data)
check that here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit import previous_semantics
from vault.audit import semantics
from vault.audit.chain import GENESIS, Head, link
from vault.audit.entry import Draft, Entry
from vault.audit.semantics import SemanticChecker, ts_micros
from vault.audit.tokenbook import IN_MEMORY, Token, TokenBook
from vault.clock import format_ts

T0 = datetime(2026, 11, 27, 17, 0, 0, tzinfo=UTC)
EPOCH0 = int(T0.timestamp())
JTIS = ["j1", "j1", "j2", "j3", ""]
PRINCIPALS = ["p_bot", "p_owner", None]
SCOPES = ["chat", "chat models:read", "read", " chat  read ", "no-such-scope", ""]
METHODS = ["POST", "GET", "get", "DELETE", None, 7]
PATHS = ["/api/chat/completions", "/api/models", "/api/v1/chats/c-1", "/api/v1/auths/", "x", None]


# Around exp + leeway for exp at T0 and T0 + 300 s, leeway 0, 1 or 30.
BOUNDARIES = st.sampled_from([-1, 0, 1, 2, 29, 30, 31, 299, 300, 301, 302, 329, 330, 331])


# Uses and issues more often than the rest, so that uses meet the tokens they name.
KINDS = [
    *["token.issued"] * 3,
    *["token.used"] * 5,
    "token.revoked",
    "principal.disabled",
    "other",
]


def draft_for(draw: st.DrawFn) -> Draft:
    kind = draw(st.sampled_from(KINDS))
    actor = draw(st.sampled_from(PRINCIPALS))
    jti: Any = draw(st.sampled_from([*JTIS, 5]))
    data: dict[str, Any]
    if kind == "token.issued":
        exp: Any = EPOCH0 + draw(
            st.sampled_from([0, 300]) | st.integers(min_value=-100, max_value=400)
        )
        data = {"jti": jti, "scope": draw(st.sampled_from([*SCOPES, 3])), "exp": exp}
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            data["exp"] = draw(st.sampled_from(["soon", True, None]))
    elif kind == "token.used":
        data = {
            "jti": jti,
            "outcome": draw(st.sampled_from(["allowed", "allowed", "denied_scope", "maybe"])),
            "method": draw(st.sampled_from(METHODS)),
            "path": draw(st.sampled_from(PATHS)),
        }
    elif kind == "token.revoked":
        data = {"jti": jti, "by": "jti"}
    elif kind == "principal.disabled":
        data = {"principal_id": draw(st.sampled_from(["p_bot", "p_other", ""]))}
    else:
        data = {"jti": jti}
    if draw(st.integers(min_value=0, max_value=15)) == 0:
        data.pop(draw(st.sampled_from(sorted(data))))
    return Draft(type=kind, actor=actor, subject="u-1", data=data)


@st.composite
def logs(draw: st.DrawFn) -> list[Entry]:
    entries: list[Entry] = []
    head = GENESIS
    for _ in range(draw(st.integers(min_value=0, max_value=30))):
        seconds = draw(st.one_of(BOUNDARIES, BOUNDARIES, st.integers(-50, 500)))
        micros = draw(st.sampled_from([0, 1, 999_999]))
        ts = format_ts(T0 + timedelta(seconds=seconds, microseconds=micros))
        (entry,) = link(head, [draft_for(draw)], ts)
        if draw(st.integers(min_value=0, max_value=20)) == 0:
            entry = dataclasses.replace(entry, data_json=draw(st.sampled_from(["[1]", "{", "7"])))
        entries.append(entry)
        head = Head(entry.seq, entry.hash)
    return entries


def run(checker: Any, entries: list[Entry]) -> tuple[list[tuple[int, str, str]], int]:
    for entry in entries:
        checker.feed(entry)
    return [(v.seq, v.rule, v.reason) for v in checker.finish()], checker.total


@settings(max_examples=300)
@given(
    entries=logs(),
    leeway=st.sampled_from([0, 1, 30]),
    limit=st.sampled_from([1, 3, 100]),
    in_memory=st.sampled_from([1, 2, IN_MEMORY]),  # 1 and 2: tokens move to disk all the time
)
def test_the_same_violations_as_the_previous_checker(
    entries: list[Entry], leeway: int, limit: int, in_memory: int
) -> None:
    expected = run(previous_semantics.SemanticChecker(leeway_seconds=leeway, limit=limit), entries)
    checker = SemanticChecker(leeway_seconds=leeway, limit=limit, tokens_in_memory=in_memory)
    assert run(checker, entries) == expected


@settings(max_examples=100)
@given(entries=logs())
def test_data_parsed_by_the_reader_gives_the_same_violations(entries: list[Entry]) -> None:
    """``feed_row`` with ``data`` already parsed (the export reader's case: an object) is
    ``feed``."""
    by_entry = run(SemanticChecker(), entries)
    checker = SemanticChecker()
    for entry in entries:
        try:
            data = json.loads(entry.data_json)
        except ValueError:
            data = None
        checker.feed_row(entry.as_row(), data if isinstance(data, dict) else None)
    assert ([(v.seq, v.rule, v.reason) for v in checker.finish()], checker.total) == by_entry


def test_a_malformed_ts_in_a_use_is_still_reported() -> None:
    (issued,) = link(
        GENESIS,
        [
            Draft(
                type="token.issued",
                actor="p",
                subject=None,
                data={"jti": "j", "scope": "chat", "exp": EPOCH0},
            )
        ],
        format_ts(T0),
    )
    used = Draft(
        type="token.used", actor="p", subject=None, data={"jti": "j", "outcome": "allowed"}
    )
    (good,) = link(Head(1, issued.hash), [used], format_ts(T0))
    bad = dataclasses.replace(good, seq=3, ts="yesterday")
    expected = run(previous_semantics.SemanticChecker(), [issued, good, bad])
    assert expected[0] == [(3, semantics.MALFORMED, "ts is not a canonical UTC timestamp")]
    assert run(SemanticChecker(), [issued, good, bad]) == expected


@pytest.mark.parametrize(
    ("exp", "late"),
    [(2**53 - 1, False), (10**20, False), (-(2**53 - 1), True), (-(10**20), True), (10**12, False)],
)
def test_an_exp_beyond_any_date_is_compared_not_crashed_on(exp: int, late: bool) -> None:
    """The previous checker raised (``datetime`` overflow) on these; an integer compare does
    not. (A database row may hold any integer in ``data``: its hash covers the text as stored.)"""
    ts = format_ts(T0)
    issued = Entry(
        seq=1,
        ts=ts,
        type="token.issued",
        actor="p",
        subject=None,
        data_json=f'{{"exp":{exp},"jti":"j","scope":""}}',
        prev="0" * 64,
        hash="1" * 64,
    )
    used = Entry(
        seq=2,
        ts=ts,
        type="token.used",
        actor="p",
        subject=None,
        data_json='{"jti":"j","outcome":"allowed"}',
        prev="1" * 64,
        hash="2" * 64,
    )
    reason = f"token j allowed at {ts}, after its exp {exp} plus 30 s leeway"
    expected = [(2, semantics.USED_AFTER_EXPIRY, reason)] if late else []
    assert run(SemanticChecker(), [issued, used])[0] == expected


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)))
def test_ts_micros_is_the_time_since_the_epoch(moment: datetime) -> None:
    expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert ts_micros(format_ts(moment)) == expected


@pytest.mark.parametrize("bad", ["", "2026-11-27T17:00:00Z", "2026-02-30T00:00:00.000000Z", "x"])
def test_ts_micros_refuses_what_parse_ts_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match=r"timestamp|day|month|range"):
        ts_micros(bad)


def test_scope_answers_are_cached_but_bounded() -> None:
    steps = [
        Draft(
            type="token.issued",
            actor="p",
            subject=None,
            data={"jti": "j", "scope": "read", "exp": EPOCH0 + 60},
        )
    ]
    count = semantics.SCOPE_CACHE_SIZE + 10
    steps += [
        Draft(
            type="token.used",
            actor="p",
            subject=None,
            data={"jti": "j", "outcome": "allowed", "method": m, "path": f"/api/v1/chats/{i}"},
        )
        for i in range(count)
        for m in ("GET", "POST")
    ]
    entries = link(GENESIS, steps, format_ts(T0))
    checker = SemanticChecker()
    found = run(checker, entries)
    assert [v[0] for v in found[0]] == list(range(3, 2 * count + 2, 2))[:100]  # every POST
    assert found[1] == count
    assert len(checker._allows) <= semantics.SCOPE_CACHE_SIZE


# --- the token book ----------------------------------------------------------------------------


def test_token_book_remembers_and_revokes_once() -> None:
    book = TokenBook()
    book.add("a", scope="chat  read", exp=100, issued_seq=1)
    book.add("b", scope="chat  read", exp=200, issued_seq=2)
    assert len(book) == 2
    assert "a" in book
    assert "c" not in book
    assert book.get("c") is None
    assert book.get("a") == Token(("chat", "read"), 100, 1, None)
    a, b = book.get("a"), book.get("b")
    assert a is not None
    assert b is not None
    assert a.scope is b.scope  # scopes interned
    book.revoke("a", 7)
    book.revoke("a", 9)
    book.revoke("c", 9)  # unknown: nothing
    assert book.get("a") == Token(("chat", "read"), 100, 1, 7)
    assert b.revoked_seq is None


@pytest.mark.parametrize(
    ("exp", "issued_seq"),
    [(2**63, 1), (-(2**63), 1), (2**63 - 1, 1), (-(2**63) + 1, 2**64), (10**30, 5), (0, 0)],
)
def test_token_book_keeps_any_integer_exactly(exp: int, issued_seq: int) -> None:
    book = TokenBook()
    book.add("w", scope="", exp=exp, issued_seq=issued_seq)
    book.add("n", scope="x", exp=5, issued_seq=6)
    assert book.get("w") == Token((), exp, issued_seq, None)
    assert book.get("n") == Token(("x",), 5, 6, None)


WIDE = st.integers(min_value=-(2**70), max_value=2**70) | st.integers(-5, 5)
OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "get", "revoke"]),
        # A forged log may hold any string: a lone surrogate cannot be bound as SQLite text.
        st.sampled_from(["a", "b", "c", "\ud800", "\x00", "é-1", "a b"]),
        st.sampled_from(["chat", "chat  read", "", " x ", "\udc80", "é\x00"]),
        WIDE,
        WIDE,
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(ops=OPS, in_memory=st.integers(min_value=1, max_value=4))
def test_a_token_book_on_disk_answers_as_one_in_memory(
    ops: list[tuple[str, str, str, int, int]], in_memory: int
) -> None:
    """Past ``in_memory`` tokens the book moves them to disk: same answers, any integer kept."""
    book = TokenBook(in_memory=in_memory)
    model: dict[str, Token] = {}
    for op, jti, scope, number, seq in ops:
        if op == "add" and jti not in model:  # the checker adds a jti once
            book.add(jti, scope=scope, exp=number, issued_seq=seq)
            model[jti] = Token(tuple(n for n in scope.split(" ") if n), number, seq, None)
        elif op == "revoke":
            book.revoke(jti, seq)
            if jti in model and model[jti].revoked_seq is None:
                model[jti] = model[jti]._replace(revoked_seq=seq)
        assert book.get(jti) == model.get(jti)
        assert (jti in book) == (jti in model)
        assert len(book) == len(model)
    assert all(book.get(jti) == token for jti, token in model.items())
    book.close()
    assert len(book) == 0


def test_a_token_book_holds_at_most_its_limit_in_memory() -> None:
    book = TokenBook(in_memory=100)
    for i in range(1_000):
        book.add(f"j{i}", scope="chat", exp=i, issued_seq=i)
        assert len(book._row) <= 100
    assert len(book) == 1_000
    assert book.get("j0") == Token(("chat",), 0, 0, None)
    assert book.get("j999") == Token(("chat",), 999, 999, None)


BOOK_ON_A_FULL_DISK = """
import resource, signal
from vault.audit.tokenbook import TokenBook
from vault.errors import Unavailable
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
book = TokenBook(in_memory=1_000)
try:
    for i in range(100_000):  # ~6 MB of rows: past the 2 MiB page cache, into the file
        book.add(f"jti-{i:030d}", scope="chat", exp=i, issued_seq=i)
        assert book.get("jti-missing") is None
except Unavailable as exc:
    try:
        book.get("jti-missing")
    except Unavailable:  # and it stays failed: no answer without what it could not keep
        print(i, exc)
"""


def test_a_token_book_whose_disk_fails_says_so_rather_than_answer() -> None:
    """A real refusal of the disk (a file size limit, in a process of its own): one clear
    error, never an answer made without the tokens it could not keep."""
    done = subprocess.run(
        [sys.executable, "-c", BOOK_ON_A_FULL_DISK],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    count, _, message = done.stdout.partition(" ")
    assert 1_000 < int(count) < 99_999, done.stdout  # it failed once the file had to grow
    assert "temporary file of tokens failed" in message
    assert "TMPDIR" in message


def _token_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if "dvault-tokens-" in os.readlink(f"/proc/self/fd/{fd}"):
                found.append(fd)
    return found


def test_a_token_book_gone_closes_its_file_at_once() -> None:
    """Not when the cycle collector next runs: the file holds disk space (a server verifies
    again and again)."""
    gc.collect()
    before = _token_files()
    gc.disable()
    try:
        book = TokenBook(in_memory=1)
        for jti in ("a", "b", "c"):
            book.add(jti, scope="chat", exp=1, issued_seq=1)
        assert len(_token_files()) == len(before) + 1
        del book
        assert _token_files() == before
    finally:
        gc.enable()


def test_token_book_is_compact() -> None:
    """About 90 bytes per token besides its jti (an object per token took about 160)."""
    jtis = [f"jti-{i:028d}" for i in range(20_000)]
    tracemalloc.start()
    try:
        book = TokenBook()
        for i, jti in enumerate(jtis):
            book.add(jti, scope="chat", exp=EPOCH0 + 10_000 + i, issued_seq=1_000 + 5 * i)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used / len(jtis) < 120
