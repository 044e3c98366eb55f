"""``dvault serve --workers N`` (N > 1): each worker listens on a socket of its own, one port.

uvicorn's own supervisor binds one socket and shares it between its workers: they accept from one
queue, and whichever wakes first takes a whole burst of new connections. Measured here, 16
connections opened at once went 16/0, 15/1 and 2/14 between two workers, so one worker served
nearly everything and a second one added nothing. Here each worker binds its own socket with
``SO_REUSEPORT`` and the kernel spreads new connections across them by a hash of their addresses.

Before starting the workers, the parent binds the address once *without* ``SO_REUSEPORT`` and
lets it go (with ``SO_REUSEADDR`` only, so that a restart is not refused for connections in
TIME_WAIT): if anything already listens there, another vault included, that fails with a clear
error instead of the two silently sharing the port.

The parent starts the workers (spawned, not forked), passes SIGINT and SIGTERM on to them and
waits for them. A worker that dies is started again; one that fails before serving (uvicorn's
exit code 3) stops them all, since its replacement would fail the same way.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn

from vault.cli.output import configure_logging

STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start serving
BACKLOG = 2048  # uvicorn's default
POLL_SECONDS = 0.5
STOP_SECONDS = 30.0  # a worker still running this long after SIGTERM is killed


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_free(host: str, port: int) -> None:
    """Raise ``OSError`` if something already listens on ``host:port``. ``SO_REUSEADDR`` (as
    uvicorn sets it) lets the connections of a server just stopped, in TIME_WAIT, pass."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def listening_socket(host: str, port: int, *, shared: bool = True) -> socket.socket:
    """A socket listening on ``host:port``; ``shared``: one of the workers' group
    (``SO_REUSEPORT``)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _worker(options: dict[str, Any]) -> None:
    """One worker: its own socket, then uvicorn's server on it (as ``uvicorn.run`` would)."""
    configure_logging()  # a spawned process starts with none: as the parent's, not bare lines
    config = uvicorn.Config(**options)
    try:
        sock = listening_socket(config.host, config.port)
    except OSError as exc:
        print(
            f"error: cannot listen on {config.host}:{config.port}: {exc.strerror}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(STARTUP_FAILURE) from None
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    """Runs ``count`` workers with uvicorn ``options`` until SIGINT or SIGTERM."""

    def __init__(self, options: dict[str, Any], count: int) -> None:
        self._options = options
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False

    def _start(self) -> BaseProcess:
        process = self._context.Process(target=_worker, args=(self._options,), daemon=False)
        process.start()
        return process

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        workers = [self._start() for _ in range(self._count)]
        code = 0
        try:
            while not self._stopping:
                time.sleep(POLL_SECONDS)
                for index, worker in enumerate(workers):
                    if worker.is_alive() or self._stopping:
                        continue
                    if worker.exitcode == STARTUP_FAILURE:
                        self._stopping, code = True, 1
                        break
                    workers[index] = self._start()  # it died while serving: replace it
        finally:
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()  # SIGTERM: uvicorn shuts down gracefully
            deadline = time.monotonic() + STOP_SECONDS
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()))
                if worker.is_alive():
                    worker.kill()
                    worker.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code
