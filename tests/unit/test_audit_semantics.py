"""vault.audit.semantics: valid hash chains that tell an impossible story, and ones that don't.

Every log here is built with ``vault.audit.chain.link``, so each one passes the hash check; only
its meaning is wrong (or, in the controls, right). The entries carry exactly the data members
the vault writes (vault/ops/tokens.py, revocation.py, principals.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vault.audit import semantics
from vault.audit.chain import GENESIS, Head, link, verify_chain
from vault.audit.checkpoint import make_checkpoint
from vault.audit.entry import Draft, Entry
from vault.audit.recorded_scopes import signed_record
from vault.audit.semantics import SemanticChecker, Violation
from vault.audit.verify import verify_log
from vault.clock import format_ts
from vault.crypto.b64 import b64url_encode
from vault.crypto.canonical import canonical_json
from vault.crypto.keys import KeyPair, generate
from vault.policy.scopes import Rule, ScopeTable

T0 = datetime(2026, 11, 27, 17, 0, 0, tzinfo=UTC)
EPOCH0 = int(T0.timestamp())
TTL = 300
OWNER, BOT, OTHER = "p_owner", "p_bot", "p_other"
AUDIT = generate("audit")
LOOKUP = {AUDIT.kid: AUDIT.public_key}.get


# --- building a log: (seconds after T0, draft) pairs, linked one by one ------------------------


def at(seconds: float) -> str:
    return format_ts(T0 + timedelta(seconds=seconds))


def build(steps: Sequence[tuple[float, Draft]]) -> list[Entry]:
    entries: list[Entry] = []
    head = GENESIS
    for seconds, draft in steps:
        (entry,) = link(head, [draft], at(seconds))
        entries.append(entry)
        head = Head(entry.seq, entry.hash)
    verify_chain(entries)  # every log in this file is a sound hash chain
    return entries


def issued(
    jti: str, *, scope: str = "chat models:read", issued_at: int = 0, actor: str = BOT
) -> Draft:
    return Draft(
        type="token.issued",
        actor=actor,
        subject="u-1",
        data={
            "jti": jti,
            "scope": scope,
            "exp": EPOCH0 + issued_at + TTL,
            "ttl_seconds": TTL,
            "reason": "test: TICKET-1",
            "client_ip": "127.0.0.1",
            "kid": "k1",
        },
    )


def used(
    jti: str,
    *,
    outcome: str = "allowed",
    method: str | None = "POST",
    path: str | None = "/api/chat/completions",
) -> Draft:
    return Draft(
        type="token.used",
        actor=BOT,
        subject="u-1",
        data={
            "jti": jti,
            "outcome": outcome,
            "method": method,
            "path": path,
            "client_ip": "10.0.0.7",
            "verifier": "p_verifier",
        },
    )


def revoked(jti: str, *, by: str = "jti") -> Draft:
    return Draft(
        type="token.revoked",
        actor=OWNER,
        subject="u-1",
        data={"jti": jti, "by": by, "token_actor": BOT, "exp": EPOCH0 + TTL},
    )


def disabled(principal_id: str, revoked_count: int = 0) -> Draft:
    return Draft(
        type="principal.disabled",
        actor=OWNER,
        subject=None,
        data={"principal_id": principal_id, "revoked": revoked_count},
    )


def subject_upserted() -> Draft:
    return Draft(
        type="subject.upserted", actor=OWNER, subject="u-1", data={"email": "u1@example.com"}
    )


def check(entries: Sequence[Entry], **options: Any) -> list[Violation]:
    checker = SemanticChecker(**options)
    for entry in entries:
        checker.feed(entry)
    return checker.finish()


def only(violations: list[Violation]) -> Violation:
    assert len(violations) == 1, violations
    return violations[0]


def clean_log() -> list[Entry]:
    """What the vault writes for an ordinary day: issue, uses in and out of scope, revoke."""
    return build(
        [
            (0, subject_upserted()),
            (1, issued("j1", issued_at=1)),
            (2, used("j1")),
            (3, used("j1", method="GET", path="/api/models")),
            (4, used("j1", outcome="denied_scope", method="DELETE", path="/api/v1/chats/x")),
            (5, used("j1", method=None, path=None)),
            (6, used("j1", method="GET", path="/api/v1/auths/")),  # allowed under every scope
            (7, revoked("j1")),
            (8, issued("j2", scope="read", issued_at=8)),
            (9, used("j2", method="GET", path="/api/v1/chats/c-1")),
            (10, disabled(OTHER, 0)),
            (11, issued("j3", issued_at=11, actor=OWNER)),
        ]
    )


# --- negative controls: what the vault writes is not a violation -----------------------------


def test_a_correct_log_has_no_violations() -> None:
    assert check(clean_log()) == []


def test_an_empty_log_has_no_violations() -> None:
    assert check([]) == []


def test_a_use_denied_for_scope_is_not_a_violation() -> None:
    entries = build([(0, issued("j1")), (1, used("j1", outcome="denied_scope", method="DELETE"))])
    assert check(entries) == []


def test_a_denied_use_after_expiry_or_revocation_is_not_a_violation() -> None:
    entries = build(
        [
            (0, issued("j1")),
            (TTL + 3600, used("j1", outcome="denied_scope", method="DELETE")),
            (TTL + 3601, revoked("j1")),
            (TTL + 3602, used("j1", outcome="denied_scope", method="DELETE")),
        ]
    )
    assert check(entries) == []


@pytest.mark.parametrize("late", [0, 1, 29, 29.999999, 30])
def test_a_use_within_the_leeway_is_fine(late: float) -> None:
    entries = build([(0, issued("j1")), (TTL + late, used("j1"))])
    assert check(entries) == []


def test_other_entry_types_are_not_read() -> None:
    entries = build([(0, Draft(type="token.rejected", actor=None, subject=None, data={}))])
    assert check(entries) == []


# --- rule 1: every use and revocation refers to an issued jti --------------------------------


def test_use_of_a_jti_never_issued() -> None:
    entries = build([(0, issued("j1")), (1, used("j-forged"))])
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (2, semantics.UNKNOWN_TOKEN)
    assert "j-forged" in violation.reason


def test_denied_use_of_a_jti_never_issued_is_still_unknown() -> None:
    entries = build([(0, used("j-forged", outcome="denied_scope"))])
    assert only(check(entries)).rule == semantics.UNKNOWN_TOKEN


def test_use_before_the_issue_is_unknown() -> None:
    entries = build([(0, used("j1")), (1, issued("j1"))])
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (1, semantics.UNKNOWN_TOKEN)


def test_revocation_of_a_jti_never_issued() -> None:
    entries = build([(0, issued("j1")), (1, revoked("j-other"))])
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (2, semantics.UNKNOWN_TOKEN)
    assert "token.revoked" in violation.reason


def test_a_jti_issued_twice() -> None:
    entries = build([(0, issued("j1")), (1, issued("j1", issued_at=1))])
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (2, semantics.REISSUED_TOKEN)


def test_a_reason_quotes_what_the_log_holds_escaped() -> None:
    """A forger chooses the jti: one with a terminal escape, or a lone surrogate, is quoted
    escaped, so printing the report cannot rewrite the reviewer's screen and a JSON answer (UTF-8)
    can carry it."""
    trick = "\x1b[2K\rok: 9 entries"
    entries = build([(0, issued(trick)), (1, issued(trick, issued_at=1))])
    violation = only(check(entries))
    assert violation.rule == semantics.REISSUED_TOKEN
    assert "\\x1b[2K\\rok: 9 entries" in violation.reason
    assert violation.reason.isprintable()
    forged = Entry(
        seq=1,
        ts=at(0),
        type="token.used",
        actor=BOT,
        subject="u-1",
        data_json='{"jti":"\\ud800","outcome":"allowed"}',  # JSON's escape: a lone surrogate
        prev="0" * 64,
        hash="1" * 64,
    )
    found = only(check([forged]))
    assert found.rule == semantics.UNKNOWN_TOKEN
    assert "\\ud800" in found.reason
    found.reason.encode("utf-8")  # no UnicodeEncodeError


# --- rule 2: no allowed use after exp plus the leeway ----------------------------------------


def test_allowed_use_after_expiry_and_leeway() -> None:
    entries = build([(0, issued("j1")), (TTL + 30.000001, used("j1"))])
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (2, semantics.USED_AFTER_EXPIRY)


def test_the_leeway_is_a_parameter() -> None:
    entries = build([(0, issued("j1")), (TTL + 10, used("j1"))])
    assert check(entries, leeway_seconds=10) == []
    assert only(check(entries, leeway_seconds=9)).rule == semantics.USED_AFTER_EXPIRY
    assert only(check(entries, leeway_seconds=0)).rule == semantics.USED_AFTER_EXPIRY


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_a_bad_leeway_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="leeway"):
        SemanticChecker(leeway_seconds=bad)


# --- rule 3: no allowed use after revocation -------------------------------------------------


def test_allowed_use_after_revocation() -> None:
    entries = build([(0, issued("j1")), (1, used("j1")), (2, revoked("j1")), (3, used("j1"))])
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (4, semantics.USED_AFTER_REVOCATION)
    assert "seq 3" in violation.reason


def test_revoking_one_token_leaves_the_others_usable() -> None:
    entries = build([(0, issued("j1")), (0, issued("j2")), (1, revoked("j1")), (2, used("j2"))])
    assert check(entries) == []


def test_use_both_expired_and_revoked_reports_both() -> None:
    entries = build([(0, issued("j1")), (1, revoked("j1")), (TTL + 31, used("j1"))])
    assert [(v.seq, v.rule) for v in check(entries)] == [
        (3, semantics.USED_AFTER_EXPIRY),
        (3, semantics.USED_AFTER_REVOCATION),
    ]


# --- rule 4: no allowed use outside the token's scope ----------------------------------------


def test_allowed_use_outside_scope() -> None:
    entries = build(
        [(0, issued("j1", scope="chat")), (1, used("j1", method="GET", path="/api/models"))]
    )
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (2, semantics.USED_OUTSIDE_SCOPE)
    assert "GET /api/models" in violation.reason


@pytest.mark.parametrize(("method", "path"), [(None, "/api/models"), ("GET", None), (None, None)])
def test_scope_is_not_checked_without_method_or_path(method: str | None, path: str | None) -> None:
    entries = build([(0, issued("j1", scope="chat")), (1, used("j1", method=method, path=path))])
    assert check(entries) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/models/[redacted]"),
        ("GET", "/x?key=[redacted]"),
        ("[redacted]", "/api/models"),
    ],
)
def test_scope_is_not_checked_where_the_vault_took_a_secret_out(method: str, path: str) -> None:
    """The vault replaces a secret in a reported request with ``[redacted]`` (a credential in a
    path must not reach the log); what was decided on the real path cannot be checked again."""
    entries = build([(0, issued("j1", scope="chat")), (1, used("j1", method=method, path=path))])
    assert check(entries) == []
    plain = {"method": method.replace("[redacted]", "GET"), "path": path.replace("[redacted]", "x")}
    entries = build([(0, issued("j1", scope="chat")), (1, used("j1", **plain))])
    assert only(check(entries)).rule == semantics.USED_OUTSIDE_SCOPE


def test_the_scope_table_is_a_parameter() -> None:
    table = ScopeTable({"chat": (Rule.parse("GET /only/this"),)})
    entries = build(
        [(0, issued("j1", scope="chat")), (1, used("j1", method="GET", path="/only/this"))]
    )
    assert check(entries, scopes=table) == []
    assert only(check(entries)).rule == semantics.USED_OUTSIDE_SCOPE  # the built-in table


def test_a_scope_the_table_does_not_know_allows_nothing() -> None:
    entries = build([(0, issued("j1", scope="no-such-scope")), (1, used("j1"))])
    assert only(check(entries)).rule == semantics.USED_OUTSIDE_SCOPE


def scopes_loaded(table: ScopeTable, key: KeyPair = AUDIT) -> Draft:
    """What a serving vault records at start (vault.ops.scope_record), signed with ``key``."""
    return Draft(type="scopes.loaded", actor=None, subject=None, data=signed_record(table, key))


def check_keyed(entries: Sequence[Entry], **options: Any) -> list[Violation]:
    """``check`` trusting the audit key of this file, as a verification of its checkpoints."""
    return check(entries, keys=LOOKUP, **options)


TICKETS = ScopeTable({"tickets": (Rule.parse("GET /api/tickets/**"),)})
NARROWER = ScopeTable({"tickets": (Rule.parse("GET /api/tickets/open"),)})


def test_uses_are_judged_by_the_table_the_log_recorded() -> None:
    """A scope of the vault's own file: an offline reviewer with only the built-in table (or
    another file) judges the uses by the table the log says the vault used."""
    entries = build(
        [
            (0, scopes_loaded(TICKETS)),
            (1, issued("j1", scope="tickets")),
            (2, used("j1", method="GET", path="/api/tickets/7")),
        ]
    )
    assert check_keyed(entries) == []
    assert check_keyed(entries[1:]) != []  # without the record: the built-in table knows no tickets


def test_a_use_is_judged_by_every_table_recorded_before_it_and_no_later_one() -> None:
    """Processes started at other times may each decide with their own table (a rolling
    restart, replicas, a worker replaced after the file changed): a use is allowed if a table
    recorded before it allows it; a table recorded after it does not count."""
    entries = build(
        [
            (0, scopes_loaded(NARROWER)),
            (1, issued("j1", scope="tickets")),
            (2, used("j1", method="GET", path="/api/tickets/open")),
            (3, used("j1", method="GET", path="/api/tickets/7")),
            (4, scopes_loaded(TICKETS)),
            (5, used("j1", method="GET", path="/api/tickets/7")),
            (6, scopes_loaded(NARROWER)),  # the same table again: changes nothing
            (7, used("j1", method="GET", path="/api/tickets/7")),
            (8, used("j1", method="GET", path="/api/v1/chats/")),
        ]
    )
    found = check_keyed(entries)
    assert [(v.seq, v.rule) for v in found] == [
        (4, semantics.USED_OUTSIDE_SCOPE),
        (9, semantics.USED_OUTSIDE_SCOPE),
    ]


def test_no_recorded_table_lifts_the_never_delegated_paths() -> None:
    """Even a table signed by the vault that says nothing of the never-delegated paths cannot
    make their use allowed: this version's never-rules hold whatever the record says."""
    wide = ScopeTable({"wide": (Rule.parse("* /**"),)}, never=())
    entries = build(
        [
            (0, scopes_loaded(wide)),
            (1, issued("j1", scope="wide")),
            (2, used("j1", method="GET", path="/api/v1/chats/")),
            (3, used("j1", method="GET", path="/api/v1/auths/api_key")),
            (4, used("j1", method="POST", path="/api/v1/auths/%61pi_key")),
        ]
    )
    found = check_keyed(entries)
    assert [(v.seq, v.rule) for v in found] == [
        (4, semantics.USED_OUTSIDE_SCOPE),
        (5, semantics.USED_OUTSIDE_SCOPE),
    ]


def _forged(data: dict[str, Any]) -> Draft:
    return Draft(type="scopes.loaded", actor=None, subject=None, data=data)


GENUINE = signed_record(TICKETS, AUDIT)
WIDER = ScopeTable({"tickets": (Rule.parse("* /**"),)})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (signed_record(WIDER, generate("audit")), "not a trusted audit key"),
        ({**signed_record(WIDER, AUDIT), "sig": GENUINE["sig"]}, "does not verify"),
        ({**GENUINE, "scopes": WIDER.record()["scopes"]}, "does not verify"),
        ({**GENUINE, "sig": "not base64url!"}, "does not verify"),
        ({"scopes": GENUINE["scopes"], "never": GENUINE["never"]}, "exactly the members"),
        ({**GENUINE, "actor": "p_x"}, "exactly the members"),
        ({**GENUINE, "kid": 7}, "must be strings"),
        ({}, "exactly the members"),
    ],
)
def test_a_table_no_trusted_audit_key_signed_is_a_violation_and_changes_nothing(
    data: dict[str, Any], reason: str
) -> None:
    """Someone who can write the database but holds no audit key cannot record a wider table
    to cover the uses they forge."""
    entries = build(
        [
            (0, scopes_loaded(TICKETS)),
            (1, _forged(data)),
            (2, issued("j1", scope="tickets")),
            (3, used("j1", method="GET", path="/api/tickets/7")),
            (4, used("j1", method="DELETE", path="/api/tickets/7")),
        ]
    )
    found = check_keyed(entries)
    assert [(v.seq, v.rule) for v in found] == [
        (2, semantics.MALFORMED),
        (5, semantics.USED_OUTSIDE_SCOPE),
    ]
    assert reason in found[0].reason


@pytest.mark.parametrize(
    "table",
    [
        {"scopes": {}, "never": []},
        {"scopes": [], "never": []},
        {"scopes": {"chat": "GET /x"}, "never": []},
        {"scopes": {"chat": ["FETCH /x"]}, "never": []},
        {"scopes": {"chat": [7]}, "never": []},
        {"scopes": {"two words": ["GET /x"]}, "never": []},
        {"scopes": {"chat": ["GET /**/x"]}, "never": []},
        {"scopes": {"chat": ["GET /x"]}, "never": "* /**"},
        {"scopes": {"chat": ["GET /x"] * 1001}, "never": []},
    ],
)
def test_a_signed_record_that_is_not_a_scope_table_is_a_violation(table: dict[str, Any]) -> None:
    sig = b64url_encode(AUDIT.sign(canonical_json({"type": "scopes.loaded", **table})))
    entries = build([(0, _forged({**table, "kid": AUDIT.kid, "sig": sig}))])
    assert only(check_keyed(entries)).rule == semantics.MALFORMED


def test_without_audit_keys_a_recorded_table_is_not_believed() -> None:
    entries = build(
        [
            (0, scopes_loaded(TICKETS)),
            (1, issued("j1", scope="tickets")),
            (2, used("j1", method="GET", path="/api/tickets/7")),
        ]
    )
    found = check(entries)  # no keys: the built-in table judges, and the record is reported
    assert [(v.seq, v.rule) for v in found] == [
        (1, semantics.MALFORMED),
        (3, semantics.USED_OUTSIDE_SCOPE),
    ]
    assert check(entries, keys=lambda kid: None)[0].rule == semantics.MALFORMED
    given = SemanticChecker()
    keyed = given.keyed(LOOKUP)
    assert keyed.keyed(lambda kid: None) is keyed  # keys once given stay
    # The blank copies the helpers' verification runs on keep the keys (verify_parallel).
    for checker in (keyed, keyed.blank(), keyed.blank().blank()):
        for entry in entries:
            checker.feed(entry)
        assert checker.finish() == []
    for entry in entries:
        given.feed(entry)
    assert len(given.finish()) == 2  # the checker keyed() was asked of is left as it was


def test_too_many_tables_are_a_violation() -> None:
    tables = [
        ScopeTable({"tickets": (Rule.parse(f"GET /api/tickets/{n}"),)})
        for n in range(semantics.MAX_TABLES + 1)
    ]
    entries = build([(n, scopes_loaded(table)) for n, table in enumerate(tables)])
    violation = only(check_keyed(entries))
    assert (violation.seq, violation.rule) == (semantics.MAX_TABLES + 1, semantics.MALFORMED)


# --- rule 5: no token issued by a disabled principal -----------------------------------------


def test_token_issued_after_its_principal_was_disabled() -> None:
    entries = build(
        [
            (0, issued("j1")),
            (1, disabled(BOT, 1)),
            (1, revoked("j1", by="principal_disabled")),
            (2, issued("j2", issued_at=2)),
        ]
    )
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (4, semantics.ISSUED_BY_DISABLED)
    assert BOT in violation.reason
    assert "seq 2" in violation.reason


def test_another_principal_disabled_does_not_matter() -> None:
    entries = build([(0, disabled(OTHER)), (1, issued("j1", issued_at=1))])
    assert check(entries) == []


# --- malformed data in a sound chain ----------------------------------------------------------


@pytest.mark.parametrize(
    "draft",
    [
        Draft(type="token.issued", actor=BOT, subject=None, data={"jti": "j9", "scope": "chat"}),
        Draft(
            type="token.issued",
            actor=BOT,
            subject=None,
            data={"jti": "j9", "scope": "chat", "exp": "soon"},
        ),
        Draft(type="token.used", actor=BOT, subject=None, data={"outcome": "allowed"}),
        Draft(type="token.revoked", actor=OWNER, subject=None, data={"jti": 7}),
        Draft(type="principal.disabled", actor=OWNER, subject=None, data={}),
    ],
)
def test_malformed_data_is_a_violation_not_a_crash(draft: Draft) -> None:
    entries = build([(0, draft)])
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (1, semantics.MALFORMED)


def test_an_outcome_the_vault_never_writes() -> None:
    entries = build([(0, issued("j1")), (1, used("j1", outcome="sure, why not"))])
    violation = only(check(entries))
    assert (violation.seq, violation.rule) == (2, semantics.MALFORMED)


# --- accumulation ------------------------------------------------------------------------------


def test_violations_are_capped_but_counted() -> None:
    entries = build([(i, used(f"j{i}")) for i in range(7)])
    checker = SemanticChecker(limit=3)
    for entry in entries:
        checker.feed(entry)
    assert [v.seq for v in checker.finish()] == [1, 2, 3]
    assert checker.total == 7


def test_memory_follows_tokens_not_entries() -> None:
    """Many uses of one token: the checker remembers one token, however long the log."""
    entries = build([(0, issued("j1")), *[(1 + i / 1000, used("j1")) for i in range(500)]])
    checker = SemanticChecker()
    for entry in entries:
        checker.feed(entry)
    assert checker.finish() == []
    assert checker.known_tokens == 1


def test_violation_to_dict() -> None:
    assert Violation(3, "unknown_token", "why").to_dict() == {
        "seq": 3,
        "rule": "unknown_token",
        "reason": "why",
    }


# --- verify_log: semantics in the same pass ---------------------------------------------------


def forged_tail() -> list[Entry]:
    return build([(0, issued("j1")), (1, used("j1")), (2, used("j-forged")), (3, used("j-x"))])


def test_verify_log_without_semantics_is_unchanged() -> None:
    report = verify_log(forged_tail(), [], LOOKUP)
    assert report.ok is True
    assert report.semantic_errors == ()
    assert set(report.to_dict()) == {
        "ok",
        "entries",
        "head_seq",
        "head_hash",
        "checkpoints_ok",
        "first_error",
    }


def test_verify_log_with_semantics_fails_at_the_first_violation() -> None:
    entries = forged_tail()
    report = verify_log(entries, [], LOOKUP, semantics=SemanticChecker())
    assert report.ok is False
    assert report.checkpoints_ok is True
    assert (report.entries, report.head_seq, report.head_hash) == (4, 4, entries[-1].hash)
    assert report.first_error is not None
    assert report.first_error.seq == 3
    assert semantics.UNKNOWN_TOKEN in report.first_error.reason
    assert [v.seq for v in report.semantic_errors] == [3, 4]
    as_dict = report.to_dict()
    assert as_dict["first_error"]["seq"] == 3
    assert as_dict["semantic_errors"] == [v.to_dict() for v in report.semantic_errors]
    assert as_dict["semantic_errors_total"] == 2


def test_verify_log_of_a_sound_log_keeps_the_pinned_shape() -> None:
    entries = clean_log()
    report = verify_log(entries, [], LOOKUP, semantics=SemanticChecker())
    assert report.ok is True
    assert report.to_dict() == {
        "ok": True,
        "entries": len(entries),
        "head_seq": len(entries),
        "head_hash": entries[-1].hash,
        "checkpoints_ok": True,
        "first_error": None,
    }


def test_a_chain_failure_stays_the_first_error() -> None:
    """A broken chain is named first even when a violation comes at a smaller seq."""
    entries = forged_tail()
    checkpoint = make_checkpoint(Head(4, "f" * 64), at(10), AUDIT)  # vouches for another hash
    report = verify_log(entries, [checkpoint], LOOKUP, semantics=SemanticChecker())
    assert report.ok is False
    assert report.checkpoints_ok is False
    assert report.first_error is not None
    assert report.first_error.seq == 4
    assert "checkpoint" in report.first_error.reason
    assert [v.seq for v in report.semantic_errors] == [3]  # the walk stopped at seq 4


def test_data_naming_a_member_twice_is_a_violation() -> None:
    """A stored ``data`` text with a member twice (only a hand-edit writes one): which one
    counts would depend on the reader, so the checker believes neither."""
    row = (
        1,
        format_ts(T0),
        "token.revoked",
        OWNER,
        None,
        '{"jti":"j1","jti":"j2"}',
        "0" * 64,
        "0" * 64,
    )
    checker = SemanticChecker()
    checker.feed_row(row)
    violation = only(checker.finish())
    assert (violation.seq, violation.rule) == (1, semantics.MALFORMED)
    assert violation.reason == "token.revoked data names a member twice"
