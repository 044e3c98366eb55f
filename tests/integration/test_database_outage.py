"""The database becomes unwritable mid-run (issue "Adversarial proof", crash).

Requests fail with 503 and a JSON error, no token is handed out, nothing is half-written, and the
vault serves again by itself when the database is back -- no restart.

- PostgreSQL: a *private* cluster (initdb into a temporary directory, its own port), so stopping
  it does not disturb the shared server other tests use. It is stopped with ``pg_ctl stop -m
  fast`` while clients are issuing tokens, then started again.
- SQLite: the database's file system fills up (a small tmpfs, which needs root to mount) while
  tokens are issued, then space is freed again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import Api, LiveServer, free_port, make_settings
from vault.ops.setup import init_vault

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REFUSALS = {"audit_unavailable", "unavailable"}
WAIT_SECONDS = 30.0
HAMMER_THREADS = 3
HAMMER_LIMIT = 600  # requests in all, so a hammer that is never stopped still ends


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def assert_refused(r: httpx.Response) -> None:
    """503, the SPEC's JSON error body, and nothing a caller could use."""
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].split(";")[0].strip() == "application/json", r.headers
    assert r.headers.get("retry-after") == "1", r.headers  # failing closed: try again shortly
    body = r.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] in REFUSALS, body
    assert "access_token" not in r.text
    assert "eyJ" not in r.text  # no JWT in any form


# --- the two databases ------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of its own: initdb into ``root``, served on 127.0.0.1:``port``.

    As root the binaries run as the ``postgres`` OS user (initdb refuses root). Every call to
    pg_ctl is bounded.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str, check: bool = True) -> int:
        command = [str(PG_BIN / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=90, check=False, cwd=self.root
        )
        if check and done.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}: {done.stdout}{done.stderr}{tail}"
            )
        return done.returncode

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "postgres.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "30", "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False) == 0


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    for program in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / program).exists():
            pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (the postgresql-15 package)")
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot run initdb as 'postgres'")
    try:
        owner = pwd.getpwnam("postgres") if as_root else None
    except KeyError:
        pytest.skip("running as root without a 'postgres' OS user to run initdb as")
    # Not under pytest's tmp_path: its parents are 0700 root, out of reach of 'postgres'.
    root = Path(tempfile.mkdtemp(prefix="dvault-pg-"))
    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        cluster = PrivatePostgres(root)
        cluster.init()
        try:
            cluster.start()
            yield cluster
        finally:
            if cluster.running():
                cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mountpoint`` (root only); unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root")
    mountpoint.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no privilege?): {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        unmounted = subprocess.run(
            ["umount", str(mountpoint)], capture_output=True, timeout=30, check=False
        )
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], timeout=30, check=False)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has not a byte left."""
    size = 1 << 16
    with path.open("wb", buffering=0) as filler:
        while size:
            try:
                filler.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                size //= 2


# --- the vault and its clients ---------------------------------------------------------------


class Scene:
    def __init__(self, api: Api) -> None:
        self.api = api
        api.subject("u-1", "alice@example.com")
        _, self.delegator = api.principal("support-bot", "delegator")
        _, self.verifier = api.principal("owui", "verifier")
        self.handed_out: list[str] = []  # jti of every token a caller received
        self.first_token = self.issue()

    def issue(self) -> str:
        r = self.api.token(self.delegator, "u-1", scope="chat")
        assert r.status_code == 200, r.text
        self.handed_out.append(r.json()["jti"])
        token: str = r.json()["access_token"]
        return token

    def introspect(self, token: str) -> httpx.Response:
        return self.api.call(
            "POST",
            "/v1/introspect",
            self.verifier,
            json={"token": token, "method": "POST", "path": "/api/chat/completions"},
        )

    def assert_down(self) -> None:
        """While the database cannot be written: every write refused, no token handed out."""
        assert_refused(self.api.token(self.delegator, "u-1", scope="chat"))
        assert_refused(self.api.token(self.delegator, "nobody@example.com"))  # denials too
        used = self.introspect(self.first_token)
        assert_refused(used)
        assert "active" not in used.json()
        assert self.api.call("GET", "/healthz").status_code == 200

    def assert_consistent(self, stored_jtis: set[str]) -> None:
        """The chain verifies; every token handed out has exactly one token.issued entry; the
        tokens table holds exactly the tokens the log says were issued."""
        r = self.api.call("GET", "/v1/audit/verify", self.api.owner)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True, r.json()
        issued = self.api.entries(type="token.issued")
        assert len(issued) < 1000, "more entries than one page: raise the page or paginate"
        per_jti = Counter(entry["data"]["jti"] for entry in issued)
        assert all(n == 1 for n in per_jti.values()), per_jti.most_common(3)
        missing = [jti for jti in self.handed_out if per_jti[jti] != 1]
        assert not missing, f"handed out without a token.issued entry: {missing}"
        assert len(set(self.handed_out)) == len(self.handed_out)
        assert stored_jtis == set(per_jti), "a token row without its entry, or the reverse"


class Hammer:
    """Threads issuing tokens back to back until stopped (and never more than HAMMER_LIMIT)."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.results: list[tuple[float, httpx.Response]] = []  # (monotonic time sent, answer)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(HAMMER_THREADS)
        ]

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.scene.delegator}"}
        body = {"subject": "u-1", "scope": "chat", "reason": "outage test: TICKET-9"}
        with httpx.Client(base_url=self.scene.api.url, timeout=30) as client:
            while not self._stop.is_set():
                with self._lock:
                    if len(self.results) + len(self.errors) >= HAMMER_LIMIT:
                        return
                sent = time.monotonic()
                try:
                    r = client.post("/v1/token", headers=headers, json=body)
                except httpx.HTTPError as exc:  # the vault itself must stay up
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                with self._lock:
                    self.results.append((sent, r))

    def count(self, status: int, *, sent_after: float = 0.0) -> int:
        with self._lock:
            return sum(1 for t, r in self.results if r.status_code == status and t > sent_after)

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a hammer thread did not stop"

    def settle(self, scene: Scene, *, down_since: float) -> None:
        """Every answer was a token or the SPEC's refusal, and none sent after the database was
        down was a token; the tokens go to ``scene.handed_out``."""
        assert not self.errors, self.errors[:3]
        for sent, r in self.results:
            if r.status_code == 200:
                assert sent < down_since, f"a token handed out while the database was down: {r}"
                scene.handed_out.append(r.json()["jti"])
            else:
                assert_refused(r)


# --- PostgreSQL: the server stops ------------------------------------------------------------


def postgres_tokens(cluster: PrivatePostgres) -> set[str]:
    with psycopg.connect(cluster.dsn, connect_timeout=10) as conn:
        return {row[0] for row in conn.execute("SELECT jti FROM tokens")}


@pytest.mark.slow  # a PostgreSQL cluster of its own: real server processes
def test_postgres_stopped_mid_run(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    cluster = private_postgres
    settings = make_settings(tmp_path / "home", cluster.url)
    owner = init_vault(settings).credential
    with LiveServer(settings) as server:
        api = Api(server.url, owner)
        try:
            scene = Scene(api)
            for _ in range(3):
                scene.issue()

            with Hammer(scene) as hammer:
                wait_until("tokens issued before the stop", lambda: hammer.count(200) >= 5)
                cluster.stop("fast")  # mid-run: the hammer's requests are in flight
                down_since = time.monotonic()
                wait_until(
                    "refusals while the database is down",
                    lambda: hammer.count(503, sent_after=down_since) >= 5,
                )
            hammer.settle(scene, down_since=down_since)

            scene.assert_down()
            ready = api.call("GET", "/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.headers.get("retry-after") == "1", ready.headers
            assert ready.json()["status"] == "not_ready"
            assert ready.json()["error"] == "unavailable"
            assert ready.json()["error_description"].startswith("not ready: database unreachable")

            cluster.start()
            # Back by itself: the very first request after the restart is served.
            scene.issue()
            used = scene.introspect(scene.first_token)
            assert used.status_code == 200, used.text
            assert used.json()["active"] is True
            assert api.call("GET", "/readyz").status_code == 200
            scene.assert_consistent(postgres_tokens(cluster))
        finally:
            api.close()


# --- SQLite: the disk fills up ----------------------------------------------------------------


def verified_head(api: Api) -> int:
    r = api.call("GET", "/v1/audit/verify", api.owner)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True, r.json()
    head: int = r.json()["head_seq"]
    return head


def sqlite_tokens(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT jti FROM tokens")}
    finally:
        conn.close()


def test_sqlite_disk_full_mid_run(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        database = disk / "vault.db"
        settings = make_settings(disk / "home", f"sqlite:///{database}")
        owner = init_vault(settings).credential
        with LiveServer(settings) as server:
            api = Api(server.url, owner)
            try:
                scene = Scene(api)
                for _ in range(3):
                    scene.issue()
                fill(disk / "filler")

                # SQLite reuses room it already has (in the WAL): issue until the disk refuses.
                refused: httpx.Response | None = None
                for _ in range(500):
                    r = api.token(scene.delegator, "u-1", scope="chat")
                    if r.status_code != 200:
                        refused = r
                        break
                    scene.handed_out.append(r.json()["jti"])
                assert refused is not None, "the full disk never refused a write"
                assert_refused(refused)
                assert refused.json()["error"] == "audit_unavailable"
                head = verified_head(api)
                scene.assert_down()
                # Reading still works, and the refused requests left nothing behind.
                assert verified_head(api) == head

                (disk / "filler").unlink()
                scene.issue()  # back by itself
                used = scene.introspect(scene.first_token)
                assert used.status_code == 200, used.text
                assert used.json()["active"] is True
                scene.assert_consistent(sqlite_tokens(database))
            finally:
                api.close()
