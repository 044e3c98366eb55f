"""One helper process of ``dvault audit verify``: walks one range of the chain, stored or exported.

``python -m vault.ops.verify_helper`` reads one JSON request on standard input, for a range of
the stored log::

    {"source": {"dialect": "sqlite" | "postgresql", "address": ...},
     "lo": 1, "hi": 500000, "anchors": [[seq, hash], ...]}

or for a byte range of an export file (``vault.ops.export_ranges``) that the parent opened and
this process inherited as file descriptor ``fd``, ``start`` being the entry line before the
range (its seq and hash as written)::

    {"fd": 3, "from": 0, "to": 123456, "start": [0, "000..."], "anchors": [[seq, hash], ...]}

and writes one JSON line on standard output: the ``Segment`` it found (``segments.walk``), or
``{"error": "<exception class>"}`` if it could not read the rows. Nothing else is printed, and
no message of an exception (a driver's could name the database's address).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

from vault.audit import segments
from vault.audit.chain import Head
from vault.audit.export import read_rows
from vault.ops import export_ranges
from vault.storage.log_rows import RowSource


def run(request: dict[str, Any]) -> dict[str, object]:
    anchors: dict[int, list[str]] = defaultdict(list)
    for seq, digest in request["anchors"]:
        anchors[int(seq)].append(str(digest))
    if "fd" in request:
        fd, seq, digest = int(request["fd"]), request["start"][0], request["start"][1]
        lines = export_ranges.lines(fd, int(request["from"]), int(request["to"]))
        rows = (row for row, _ in read_rows(lines, entries_only=True))
        return segments.walk_open(Head(int(seq), str(digest)), rows, anchors).to_dict()
    source = RowSource(**request["source"])
    lo, hi = int(request["lo"]), int(request["hi"])
    conn = source.connect()
    try:
        start = source.before(conn, lo)
        return segments.walk(lo, hi, start, source.rows(conn, lo, hi), anchors).to_dict()
    finally:
        conn.close()


def main() -> int:
    try:
        answer = run(json.loads(sys.stdin.read()))
    except Exception as exc:  # the parent walks the whole log itself instead
        answer = {"error": type(exc).__name__}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0 if "error" not in answer else 1


if __name__ == "__main__":
    sys.exit(main())
