"""vault.audit.export: the NDJSON export, read back in two passes, with named bad vectors.

The vectors are generated at test time from fixed Ed25519 seeds (Ed25519 signatures are
deterministic), so every run sees byte-identical files without storing any.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from vault.audit.chain import GENESIS, Head, link
from vault.audit.checkpoint import Checkpoint, checkpoint_from_dict, make_checkpoint
from vault.audit.entry import Draft, Entry
from vault.audit.export import (
    CHECKPOINT_KIND,
    checkpoint_line,
    read_checkpoints,
    read_entries,
    read_rows,
)
from vault.audit.verify import Report, verify_log, verify_rows
from vault.clock import format_ts
from vault.crypto.keys import AUDIT, KeyPair, thumbprint
from vault.errors import MalformedExport

T0 = datetime(2026, 11, 27, 17, 0, 0, tzinfo=UTC)
N = 6
CHECKPOINT_SEQS = (3, N)


def seeded_key(seed: int) -> KeyPair:
    private_key = Ed25519PrivateKey.from_private_bytes(bytes((seed + i) % 256 for i in range(32)))
    return KeyPair(kid=thumbprint(private_key.public_key()), purpose=AUDIT, private_key=private_key)


KEY = seeded_key(1)
WRONG_KEY = seeded_key(2)


def lookup(kid: str) -> Ed25519PublicKey | None:
    return KEY.public_key if kid == KEY.kid else None


def ts_at(i: int) -> str:
    return format_ts(T0 + timedelta(seconds=i, microseconds=17 * i))


def draft(i: int) -> Draft:
    return Draft(
        type=["token.issued", "token.used", "token.revoked"][i % 3],
        actor=f"principal-{i % 2}",
        subject=None if i == 2 else f"subject-é{i}",
        data={"jti": f"jti-{i}", "path": "/api/chat/completions", "n": i, "ok": i % 2 == 0},
    )


def build_log(n: int = N) -> tuple[list[Entry], list[Checkpoint]]:
    entries: list[Entry] = []
    head = GENESIS
    for seq in range(1, n + 1):
        (entry,) = link(head, [draft(seq)], ts_at(seq))
        entries.append(entry)
        head = Head(entry.seq, entry.hash)
    checkpoints = [
        make_checkpoint(Head(s, entries[s - 1].hash), ts_at(100 + s), KEY)
        for s in CHECKPOINT_SEQS
        if s <= n
    ]
    return entries, checkpoints


def export_lines(entries: list[Entry], checkpoints: list[Checkpoint]) -> list[str]:
    """Lines as a file iterates them: each ends with a newline."""
    return [e.to_line() + "\n" for e in entries] + [checkpoint_line(c) + "\n" for c in checkpoints]


def verify_lines(lines: list[str]) -> Report:
    """What ``dvault audit verify --file`` does: two passes over the same lines."""
    report = verify_rows(read_rows(lines), read_checkpoints(lines), lookup)
    assert verify_log(read_entries(lines), read_checkpoints(lines), lookup) == report
    return report


def malformed(lines: list[str]) -> MalformedExport:
    with pytest.raises(MalformedExport) as info:
        list(read_entries(lines))
    assert type(info.value) is MalformedExport
    return info.value


# --- the good export ---------------------------------------------------------------------------


def test_checkpoint_line_shape():
    _, checkpoints = build_log()
    line = checkpoint_line(checkpoints[0])
    obj = json.loads(line)
    assert obj == {**checkpoints[0].to_dict(), "kind": "checkpoint"}
    assert CHECKPOINT_KIND == "checkpoint"
    assert line == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert checkpoint_from_dict(obj) == checkpoints[0]


def test_entry_lines_carry_no_kind():
    entries, _ = build_log()
    for entry in entries:
        assert "kind" not in json.loads(entry.to_line())


def test_round_trip():
    entries, checkpoints = build_log()
    lines = export_lines(entries, checkpoints)
    assert list(read_entries(lines)) == entries
    rows = list(read_rows(lines))
    assert [row for row, _ in rows] == [entry.as_row() for entry in entries]
    assert [data for _, data in rows] == [json.loads(entry.data_json) for entry in entries]
    assert read_checkpoints(lines) == checkpoints
    report = verify_lines(lines)
    assert report == Report(
        ok=True,
        entries=N,
        head_seq=N,
        head_hash=entries[-1].hash,
        checkpoints_ok=True,
        first_error=None,
    )


def test_round_trip_through_a_file(tmp_path: Path):
    entries, checkpoints = build_log()
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(export_lines(entries, checkpoints)), encoding="utf-8")
    with path.open(encoding="utf-8") as first:
        found = read_checkpoints(first)
    with path.open(encoding="utf-8") as second:
        report = verify_log(read_entries(second), found, lookup)
    assert found == checkpoints
    assert report.ok
    assert report.head_hash == entries[-1].hash


def test_lines_without_newlines_and_crlf():
    entries, checkpoints = build_log()
    bare = [line.rstrip("\n") for line in export_lines(entries, checkpoints)]
    assert verify_lines(bare).ok
    crlf = [line + "\r\n" for line in bare]
    assert verify_lines(crlf).ok


def test_entries_only_export():
    entries, _ = build_log()
    lines = export_lines(entries, [])
    assert read_checkpoints(lines) == []
    assert verify_lines(lines).ok


def test_empty_export():
    assert list(read_entries([])) == []
    assert read_checkpoints([]) == []
    assert verify_lines([]).ok


def test_read_entries_is_lazy_and_stops_at_the_bad_line():
    entries, _ = build_log()
    lines = [e.to_line() for e in entries[:2]] + ["garbage"] + [entries[2].to_line()]
    stream = read_entries(lines)
    assert next(stream) == entries[0]
    assert next(stream) == entries[1]
    with pytest.raises(MalformedExport) as info:
        next(stream)
    assert info.value.line == 3


def test_read_checkpoints_skips_what_it_cannot_read():
    """The first pass is lenient; the second pass says what is wrong with the line."""
    entries, checkpoints = build_log()
    lines = export_lines(entries, checkpoints)
    lines.insert(N, '{"kind": "checkpoint", "seq": "not a checkpoint"\n')
    lines.insert(N, '{"kind":"note"}\n')
    lines.insert(N, '"kind" but not JSON\n')
    assert read_checkpoints(lines) == checkpoints


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["token.issued", "token.used", "policy.changed"]),
                "actor": st.none() | st.text(max_size=8),
                "subject": st.none() | st.text(max_size=8),
                "data": st.dictionaries(
                    st.text(
                        alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)),
                        max_size=6,
                    ),
                    st.none()
                    | st.booleans()
                    | st.integers(-(2**53) + 1, 2**53 - 1)
                    | st.text(max_size=8),
                    max_size=4,
                ),
            }
        ),
        max_size=6,
    )
)
def test_export_round_trip_property(drafts):
    entries = link(GENESIS, [Draft(**d) for d in drafts], ts_at(0))
    head = Head(entries[-1].seq, entries[-1].hash) if entries else GENESIS
    checkpoints = [make_checkpoint(head, ts_at(1), KEY)]
    lines = export_lines(entries, checkpoints)
    assert list(read_entries(lines)) == entries
    rows = list(read_rows(lines))
    assert [row for row, _ in rows] == [entry.as_row() for entry in entries]
    assert [data for _, data in rows] == [json.loads(entry.data_json) for entry in entries]
    assert read_checkpoints(lines) == checkpoints
    report = verify_lines(lines)
    assert report.ok
    assert report.head_seq == len(entries)


# --- named bad vectors -------------------------------------------------------------------------


@dataclass(frozen=True)
class BadVector:
    """``malformed_line``: where read_entries stops (None: every line is well-formed)."""

    mutate: Callable[[list[str]], list[str]]
    malformed_line: int | None
    first_error_seq: int
    checkpoints_ok: bool = True


def _set(index: int, text: str) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        lines[index] = text
        return lines

    return mutate


def _insert(index: int, text: str) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        lines.insert(index, text)
        return lines

    return mutate


def _flip_bit(index: int, member: str) -> Callable[[list[str]], list[str]]:
    """Flip the low bit of the first character of ``member``'s string value in line ``index``."""

    def mutate(lines: list[str]) -> list[str]:
        line = lines[index]
        at = line.index(f'"{member}":"') + len(member) + 4
        lines[index] = line[:at] + chr(ord(line[at]) ^ 1) + line[at + 1 :]
        return lines

    return mutate


def _edit_entry(index: int, **changes: object) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        obj = json.loads(lines[index])
        obj.update(changes)
        lines[index] = json.dumps(obj, ensure_ascii=False) + "\n"
        return lines

    return mutate


def _other_hex(index: int, member: str) -> Callable[[list[str]], list[str]]:
    """Change the first hex digit of ``member`` in line ``index`` to another hex digit."""

    def mutate(lines: list[str]) -> list[str]:
        line = lines[index]
        at = line.index(f'"{member}":"') + len(member) + 4
        digit = "1" if line[at] == "0" else "0"
        lines[index] = line[:at] + digit + line[at + 1 :]
        return lines

    return mutate


def _drop(index: int, member: str) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        obj = json.loads(lines[index])
        del obj[member]
        lines[index] = json.dumps(obj) + "\n"
        return lines

    return mutate


def _wrong_key_checkpoint(index: int, *, claim_right_kid: bool) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        good = checkpoint_from_dict(json.loads(lines[index]))
        forged = make_checkpoint(Head(good.seq, good.hash), good.ts, WRONG_KEY)
        if claim_right_kid:
            forged = Checkpoint(
                seq=forged.seq, hash=forged.hash, ts=forged.ts, kid=KEY.kid, sig=forged.sig
            )
        lines[index] = checkpoint_line(forged) + "\n"
        return lines

    return mutate


def _swap(i: int, j: int) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        lines[i], lines[j] = lines[j], lines[i]
        return lines

    return mutate


def _delete(index: int) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        del lines[index]
        return lines

    return mutate


def _entry_after_checkpoints(lines: list[str]) -> list[str]:
    last_entry = lines.pop(N - 1)
    return [*lines, last_entry]


def _truncated_tail(lines: list[str]) -> list[str]:
    return lines[: N - 2] + lines[N:]  # entries 5 and 6 gone, both checkpoints kept


def _truncated_line(lines: list[str]) -> list[str]:
    lines[N - 1] = lines[N - 1][: len(lines[N - 1]) // 2] + "\n"
    return lines


# Line numbers are 1-based; with N = 6 entries, lines 7 and 8 are the checkpoints (seqs 3, 6).
BAD_VECTORS: dict[str, BadVector] = {
    "bit-flip-type": BadVector(_flip_bit(2, "type"), None, 3),
    "bit-flip-hash": BadVector(_flip_bit(3, "hash"), None, 4),
    "bit-flip-prev": BadVector(_flip_bit(4, "prev"), None, 5),
    "bit-flip-checkpoint-sig": BadVector(_flip_bit(N, "sig"), None, 3, checkpoints_ok=False),
    "checkpoint-hash-changed": BadVector(_other_hex(N + 1, "hash"), None, 6, checkpoints_ok=False),
    "trailing-garbage": BadVector(lambda ls: [*ls, "garbage\n"], N + 3, N + 1),
    "trailing-json-object": BadVector(lambda ls: [*ls, '{"x":1}\n'], N + 3, N + 1),
    "trailing-empty-line": BadVector(lambda ls: [*ls, "\n"], N + 3, N + 1),
    "empty-line": BadVector(_insert(2, "\n"), 3, 3),
    "whitespace-line": BadVector(_insert(2, "   \n"), 3, 3),
    "entry-after-checkpoints": BadVector(_entry_after_checkpoints, N + 2, N),
    "unknown-kind": BadVector(_insert(N, '{"kind":"note","text":"hi"}\n'), N + 1, N + 1),
    "entry-with-kind": BadVector(_edit_entry(1, kind="entry"), 2, 2),
    "checkpoint-missing-sig": BadVector(_drop(N, "sig"), N + 1, N + 1),
    "checkpoint-seq-bool": BadVector(_edit_entry(N, seq=True), N + 1, N + 1),
    "checkpoint-wrong-key": BadVector(
        _wrong_key_checkpoint(N, claim_right_kid=False), None, 3, checkpoints_ok=False
    ),
    "checkpoint-wrong-key-right-kid": BadVector(
        _wrong_key_checkpoint(N + 1, claim_right_kid=True), None, 6, checkpoints_ok=False
    ),
    "truncated-line": BadVector(_truncated_line, N, N),
    "truncated-tail": BadVector(_truncated_tail, None, N - 1, checkpoints_ok=False),
    "reordered": BadVector(_swap(1, 2), None, 2),
    "deleted": BadVector(_delete(3), None, 4),
    "duplicated": BadVector(lambda ls: ls[:3] + ls[2:], None, 4),
    "not-an-object": BadVector(_set(1, "[1,2]\n"), 2, 2),
    "missing-member": BadVector(_drop(1, "hash"), 2, 2),
    "hash-null": BadVector(_edit_entry(1, hash=None), 2, 2),
    "extra-member": BadVector(_edit_entry(1, note="x"), 2, 2),
    "float-in-data": BadVector(_edit_entry(1, data={"x": 1.5}), 2, 2),
    "big-int-in-data": BadVector(_edit_entry(1, data={"x": 2**60}), 2, 2),
    "huge-int-literal": BadVector(_set(1, '{"seq":' + "9" * 5000 + "}\n"), 2, 2),
    "lone-surrogate-actor": BadVector(_set(1, None), 2, 2),  # set below: needs escaping
    "deeply-nested": BadVector(_set(1, "[" * 100_000 + "]" * 100_000 + "\n"), 2, 2),
    "deeply-nested-checkpoint": BadVector(
        _set(N, '{"kind":"checkpoint","x":' + "[" * 100_000 + "]" * 100_000 + "}\n"),
        N + 1,
        N + 1,
    ),
}


def _lone_surrogate_actor(lines: list[str]) -> list[str]:
    lines[1] = lines[1].replace('"actor":"principal-0"', '"actor":"\\ud800"')
    assert "\\ud800" in lines[1]
    return lines


BAD_VECTORS["lone-surrogate-actor"] = BadVector(_lone_surrogate_actor, 2, 2)


def _twice(index: int, before: str, inserted: str) -> Callable[[list[str]], list[str]]:
    """Name a member a second time in line ``index``: ``inserted`` goes before ``before``."""

    def mutate(lines: list[str]) -> list[str]:
        assert before in lines[index]
        lines[index] = lines[index].replace(before, inserted + before, 1)
        return lines

    return mutate


def _escaped_kind(mutate: Callable[[list[str]], list[str]]) -> Callable[[list[str]], list[str]]:
    """``mutate``, then spell the checkpoint lines' ``"kind"`` with a JSON escape: the same
    member, which no reader may overlook."""

    def both(lines: list[str]) -> list[str]:
        return [line.replace('"kind"', '"\\u006bind"') for line in mutate(lines)]

    return both


BAD_VECTORS["checkpoint-wrong-key-escaped-kind"] = BadVector(
    _escaped_kind(_wrong_key_checkpoint(N, claim_right_kid=False)), None, 3, checkpoints_ok=False
)


# A reader that keeps the first of two members and one that keeps the last see two entries.
BAD_VECTORS["member-twice"] = BadVector(_twice(1, '"actor":', '"type":"token.issued",'), 2, 2)
BAD_VECTORS["member-twice-in-data"] = BadVector(_twice(1, '"jti":', '"n":0,'), 2, 2)
BAD_VECTORS["member-twice-in-checkpoint"] = BadVector(_twice(N, '"seq":', '"seq":1,'), N + 1, N + 1)


@pytest.mark.parametrize("name", BAD_VECTORS.keys())
def test_bad_vector(name):
    vector = BAD_VECTORS[name]
    entries, checkpoints = build_log()
    good = export_lines(entries, checkpoints)
    lines = vector.mutate(list(good))
    assert lines != good
    if vector.malformed_line is None:
        list(read_entries(lines))  # well-formed: only verification finds the fault
    else:
        assert malformed(lines).line == vector.malformed_line
    report = verify_lines(lines)  # never raises
    assert report.ok is False
    assert report.first_error is not None
    assert report.first_error.seq == vector.first_error_seq
    assert report.checkpoints_ok is vector.checkpoints_ok


def test_malformed_reasons_say_what_is_wrong():
    entries, checkpoints = build_log()
    good = export_lines(entries, checkpoints)
    cases = {
        "empty line": _insert(2, "\n"),
        "garbage": lambda ls: [*ls, "garbage\n"],
        "unknown line kind 'note'": _insert(N, '{"kind":"note"}\n'),
        "an entry follows the checkpoints": _entry_after_checkpoints,
        "not a JSON object": _set(1, "[1,2]\n"),
        "nested too deeply": _set(1, "[" * 100_000 + "]" * 100_000 + "\n"),
        "names a member twice": _twice(2, '"actor":', '"actor":null,'),
    }
    for needle, mutate in cases.items():
        assert needle in malformed(mutate(list(good))).reason


def test_every_single_bit_flip_is_caught():
    """Exhaustive over a small export: flip each of the 7 low bits of every character."""
    entries, checkpoints = build_log(3)
    good = export_lines(entries, checkpoints[:1])
    assert verify_lines(good).ok
    for index, line in enumerate(good):
        body = line.rstrip("\n")
        for at, char in enumerate(body):
            for bit in range(7):
                flipped = body[:at] + chr(ord(char) ^ (1 << bit)) + body[at + 1 :]
                lines = [*good[:index], flipped + "\n", *good[index + 1 :]]
                report = verify_lines(lines)
                assert report.ok is False, (index, at, bit, flipped)
