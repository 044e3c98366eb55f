"""``python -m benchmarks [--quick] [--only NAME ...]``: measure, then print one markdown table.

Groups (``--only`` takes one or more; default: all but ``stack``):

- ``primitives``: the raw figures everything is compared with (also measured on demand);
- ``middleware``: ``DelegationMiddleware._verify`` in process, first sight and seen before;
- ``http-sqlite``, ``http-postgres``: token issuance and introspection over HTTP against
  ``/healthz`` on the same ``dvault serve`` (wrk load, 1 and 2 workers, 8 and 32 connections,
  and one connection with 1 worker);
- ``audit``: verification and export of a large audit log (1,000,000 entries; 20,000 with
  ``--quick``);
- ``openwebui``: ``GET /api/v1/chats/`` on a real Open WebUI with a session JWT, an ``sk-`` key
  and a delegation token (needs ``scripts/install-openwebui``);
- ``stack``: the server stacks tried (uvicorn loop/http implementations, access log, workers).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import audit_bulk, http_load, middleware, openwebui, stack
from benchmarks.primitives import Primitives
from benchmarks.report import Row, load_text, machine, markdown, now
from benchmarks.vaults import postgres_database, postgres_reachable, postgres_settings

GROUPS = (
    "primitives",
    "middleware",
    "http-sqlite",
    "http-postgres",
    "audit",
    "openwebui",
    "stack",
)
DEFAULT = tuple(g for g in GROUPS if g != "stack")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20k audit entries, 2 s of load per row, fewer configs",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=GROUPS,
        metavar="NAME",
        help=f"run only this group (repeatable): {', '.join(GROUPS)}",
    )
    parser.add_argument("--entries", type=int, help="audit log size (default 1,000,000)")
    parser.add_argument("--seconds", type=float, help="load per HTTP row (default 8; quick 2)")
    parser.add_argument("--out", type=Path, help="also write the table and machine lines here")
    return parser.parse_args(argv)


@contextmanager
def _postgres(wanted: bool) -> Iterator[str | None]:
    if not wanted or not postgres_reachable():
        yield None
        return
    with postgres_database() as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    groups = tuple(args.only or DEFAULT)
    quick = args.quick
    seconds = args.seconds or (2.0 if quick else 8.0)
    entries = args.entries or (20_000 if quick else 1_000_000)
    logging.getLogger("vault").setLevel(logging.ERROR)  # in-process vault opens: no chatter
    started, load_before = now(), load_text()
    rows: list[Row] = []
    notes: list[str] = []
    wants_pg = "http-postgres" in groups or "primitives" in groups
    with tempfile.TemporaryDirectory(prefix="dvault-bench-") as folder, _postgres(wants_pg) as pg:
        tmp = Path(folder)
        primitives = Primitives(quick=quick, tmp=tmp, pg_url=pg)

        def step(name: str, run: Callable[[], list[Row]]) -> None:
            if name not in groups:
                return
            began = time.perf_counter()
            print(f"[{name}] running (load {load_text()})", file=sys.stderr, flush=True)
            found = run()
            rows.extend(found)
            print(
                f"[{name}] {len(found)} row(s) in {time.perf_counter() - began:.0f} s",
                file=sys.stderr,
                flush=True,
            )

        workers = [1, 2]
        connections = [16] if quick else [1, 8, 32]  # 1: one client, 1 worker only
        step("primitives", primitives.rows)
        step("middleware", lambda: middleware.run(tmp=tmp, primitives=primitives, quick=quick))
        step(
            "http-sqlite",
            lambda: http_load.run(
                tmp=tmp,
                databases=["sqlite"],
                workers=workers,
                connections=connections,
                seconds=seconds,
                pool=100,
                prefilled=20_000 if quick else 100_000,
            ),
        )
        if "http-postgres" in groups and pg is None:
            rows.append(
                Row(
                    "POST /v1/token, /v1/introspect on PostgreSQL",
                    "skipped: PostgreSQL not reachable at 127.0.0.1:5432",
                )
            )
        elif pg is not None:
            step(
                "http-postgres",
                lambda: http_load.run(
                    tmp=tmp,
                    databases=["postgresql"],
                    workers=workers,
                    connections=connections,
                    seconds=seconds,
                    pool=100,
                ),
            )
        step("audit", lambda: audit_bulk.run(tmp=tmp, entries=entries))
        step("openwebui", lambda: openwebui.run(tmp=tmp, quick=quick))
        step("stack", lambda: stack.run(tmp=tmp, seconds=seconds, quick=quick))
        if pg is not None:
            notes.append(postgres_settings(pg))
    options = f"options: {' '.join(sys.argv[1:]) or '(none)'}"
    if any(g.startswith("http") or g == "stack" for g in groups):
        options += f"; {seconds:g} s of load per HTTP measurement"
    if "audit" in groups:
        options += f"; audit log of {entries:,} entries"
    notes.append(options)
    text = markdown(rows) + "\n\n" + machine(started, load_before, notes) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text, "utf-8")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
