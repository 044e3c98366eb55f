"""One helper process of ``dvault audit verify``: walks one seq range of the stored chain.

``python -m vault.ops.verify_helper`` reads one JSON request on standard input::

    {"source": {"dialect": "sqlite" | "postgresql", "address": ...},
     "lo": 1, "hi": 500000, "anchors": [[seq, hash], ...]}

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
from vault.storage.log_rows import RowSource


def run(request: dict[str, Any]) -> dict[str, object]:
    source = RowSource(**request["source"])
    lo, hi = int(request["lo"]), int(request["hi"])
    anchors: dict[int, list[str]] = defaultdict(list)
    for seq, digest in request["anchors"]:
        anchors[int(seq)].append(str(digest))
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
