"""``verify_parallel.laid_out``: the semantic pass beside the helpers of ``dvault audit verify
--file`` reads a line's members where ``entry_line`` put them, parsing only ``data``, instead of
parsing the whole line. For every line the helpers' walk accepts (a valid entry, no member named
twice), it must read exactly what parsing reads; any other layout is left to parsing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_audit_export import ts_at
from vault.audit.chain import GENESIS, Head, link
from vault.audit.entry import Draft
from vault.ops.verify_parallel import laid_out

# Up to U+FFFF: canonical JSON refuses member names beyond, whose JCS order differs.
TEXT = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    actor=st.none() | TEXT,
    subject=st.none() | TEXT,
    kind=TEXT.filter(bool),
    data=st.dictionaries(TEXT, JSON_VALUES, max_size=4),
    seq=st.integers(min_value=1, max_value=2**62),
    newline=st.booleans(),
)
def test_a_line_as_entry_line_writes_it_is_read_as_parsing_reads_it(
    actor: str | None,
    subject: str | None,
    kind: str,
    data: dict[str, object],
    seq: int,
    newline: bool,
) -> None:
    (entry,) = link(
        Head(seq - 1, "ab" * 32),
        [Draft(type=kind, actor=actor, subject=subject, data=data)],
        ts_at(seq % 1000),
    )
    line = entry.to_line() + ("\n" if newline else "")
    parsed = json.loads(line)
    assert laid_out(line) == (
        (
            parsed["seq"],
            parsed["ts"],
            parsed["type"],
            parsed["actor"],
            parsed["subject"],
            "",
            "",
            "",
        ),
        parsed["data"],
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace('{"actor":', '{ "actor":', 1),
        lambda t: t.replace('"seq":', '"seq":0', 1),
        lambda t: t.replace(',"type":', ',"kind":', 1),
        lambda t: t.rstrip("\n") + " \n",
        lambda t: t.replace('"data":{', '"data":[{', 1).replace(',"hash":', '],"hash":', 1),
        lambda t: t.replace('"subject":null', '"subject":5', 1),
        lambda t: t[:-20],
    ],
)
def test_a_line_laid_out_otherwise_is_left_to_parsing(edit: Callable[[str], str]) -> None:
    drafts = [Draft(type="t.note", actor="p1", subject=None, data={"jti": "j", "n": 1})]
    (entry,) = link(GENESIS, drafts, ts_at(1))
    line = entry.to_line() + "\n"
    assert '"subject":null' in line
    assert laid_out(edit(line)) is None


H, P = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    "line",
    [
        f'{{"actor":"a\\"b","data":{{"x":1}},"hash":"{H}","prev":"{P}","seq":7,'
        f'"subject":"s\\\\","ts":"2026-11-27T17:00:01.000017Z","type":"t\\u00e9"}}\n',
        f'{{"actor":null,"data":{{"x":{{"y":[1,"}}"]}}}},"hash":"{H}","prev":"{P}","seq":1,'
        f'"subject":null,"ts":"2026-11-27T17:00:01.000017Z","type":"t"}}',
    ],
)
def test_escapes_and_nesting_read_as_parsing_reads_them(line: str) -> None:
    parsed = json.loads(line)
    members = [parsed[name] for name in ("seq", "ts", "type", "actor", "subject")]
    assert laid_out(line) == ((*members, "", "", ""), parsed["data"])
