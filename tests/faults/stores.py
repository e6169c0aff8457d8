"""A PostgreSQL and a Redis of the fault suite's own, which it may restart, pause and kill.

The shared servers on 5432 and 6379 carry other test runs: the fault suite never touches them.
These run as this test process's children, on free loopback ports, in a temporary folder:

* PostgreSQL from Debian's binaries (``/usr/lib/postgresql/<version>/bin``), initialised with
  ``initdb`` (as the ``postgres`` user when the tests run as root, which PostgreSQL refuses),
  with ``synchronous_commit = on`` and ``fsync = on`` as in production, trust authentication on
  loopback only;
* ``redis-server`` with no persistence (``save ""``, no append-only file): a restart loses every
  key, as a Redis without persistence does in production.

Both are started under ``setpriv --pdeathsig``, so a test run that dies does not leave them
running. ``pause`` is ``SIGSTOP`` (PostgreSQL: the postmaster first, so it forks nothing more,
then every backend), ``resume`` is ``SIGCONT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from services.common import db
from services.common.settings import Env, Secret, StoreSettings
from tests.conftest import free_port
from tests.proxy import FaultProxy

START_SECONDS = 30.0


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL with ``initdb``; fails the test naming the package."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: int(path.parent.parent.name) if path.parent.parent.name
                   .isdigit() else 0)
    assert found, "PostgreSQL's server binaries are missing: apt-get install postgresql"
    return found[-1].parent


def _as_owner() -> list[str]:
    """The prefix that runs PostgreSQL as ``postgres`` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]


def _dies_with_us(signal_name: str) -> list[str]:
    # After the uid change: the kernel clears the parent-death signal when credentials change.
    return ["setpriv", f"--pdeathsig={signal_name}", "--"]


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid …": comm may hold spaces and parentheses.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivatePostgres:
    """``root`` must not exist yet: it is made here, owned by the server's user (a pytest
    temporary folder is inside one only root may enter)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._bin = postgres_bin()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.root.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run([*_as_owner(), "--", str(self._bin / "initdb"), "-D", str(self.data),
                        "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\n"
                       "listen_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\n"
                       "synchronous_commit = on\n"
                       "fsync = on\n"
                       "max_connections = 200\n")

    def start(self) -> None:
        """Starts the postmaster and waits until it accepts connections."""
        assert self.process is None or self.process.poll() is not None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*_as_owner(), *_dies_with_us("INT"), str(self._bin / "postgres"),
                 "-D", str(self.data)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            ready = subprocess.run([str(self._bin / "pg_isready"), "-q", "-h", "127.0.0.1",
                                    "-p", str(self.port), "-U", "postgres"])
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"PostgreSQL did not start in {START_SECONDS:.0f} s")

    def stop(self) -> None:
        """Fast shutdown (``pg_ctl stop -m fast``): sessions are ended, the postmaster exits."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.resume()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        for child in _children(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for child in _children(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGCONT)
        os.kill(self.process.pid, signal.SIGCONT)


class PrivateRedis:
    """``extra_args`` are appended to redis-server's command line (a later option overrides an
    earlier one: ``--port 0 --tls-port …`` for a TLS-only server on :attr:`port`)."""

    def __init__(self, root: Path, extra_args: Sequence[str] = ()) -> None:
        self.root = root
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        self.log = root / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        redis_server = shutil.which("redis-server")
        assert redis_server, "redis-server is missing: apt-get install redis-server"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*_dies_with_us("KILL"), redis_server, "--port", str(self.port),
                 "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--maxmemory-policy", "noeviction", "--dir", str(self.root), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            if _accepts(self.port):
                return
            time.sleep(0.02)
        raise AssertionError(f"redis-server did not start in {START_SECONDS:.0f} s")

    def kill(self) -> None:
        """Gone at once, and with it every key (no persistence)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.resume()
        process.kill()
        process.wait()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def private_postgres(name: str) -> Iterator[PrivatePostgres]:
    """A PostgreSQL of the caller's own, running; removed afterwards. Its folder is in the
    system's temporary folder, which its own user can reach (pytest's is root's alone)."""
    server = PrivatePostgres(Path(tempfile.gettempdir()) / f"{name}-{secrets.token_hex(4)}")
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@contextlib.asynccontextmanager
async def ended_session(server: PrivatePostgres) -> AsyncIterator[db.Pool]:
    """A service pool (one connection) whose session ``server`` has ended in a fast restart,
    with the connection's close held back: what a statement sent between a shutdown's
    "terminating connection" message and its close meets. The server is up again."""
    proxy = FaultProxy("127.0.0.1", server.port, hold_closes=True)
    await proxy.start()
    url = server.admin_url.replace(f":{server.port}/", f":{proxy.port}/")
    settings = replace(StoreSettings.from_env(Env({})), database_url=Secret(url),
                       db_pool_max=1)
    pool = await db.create_pool(settings, application_name="otesse-test")
    try:
        assert await pool.fetchval("SELECT 1") == 1
        server.stop()
        await asyncio.sleep(0.2)  # the "terminating connection" message has arrived
        server.start()
        yield pool
    finally:
        await proxy.cut()
        pool.terminate()
