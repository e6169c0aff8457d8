"""The whole stack, started for one benchmark run and stopped after it.

It is ``make run`` itself (``scripts/run-local``), steered by the services' own variables: its
own database (``otesse_bench``, dropped before and after, so every run starts alike), its own
Redis key space (``otesse-bench:``), free ports for every listener (so it runs beside ``make
run``), rate limits off and logs at WARNING unless asked (:class:`AsInProduction`; kept in
``bench/results/stack.log``), and a state folder of its own (the developer's ``.run/demo.json``
is left alone). A benchmark user and app are then created with the ``otesse-auth`` CLI, as a
script would.

The services run on the interpreter of a virtualenv (``venv``): by default the one the
benchmark itself runs in. ``make bench`` and its siblings run in ``.venv-bench``, Debian's
``python3`` (built with profile-guided and link-time optimization, as the official
``python:3.11-slim`` image's interpreter is), not ``.venv``, whose interpreter is whatever
``python3`` the developer has (pyenv's default build here, which is not optimized): issue #13
asks for figures on the interpreter production runs. :func:`interpreter` says which it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from bench.flow import App, Person
from bench.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
# The virtualenv this process runs in (``.venv``, or ``.venv-bench`` under ``make bench``).
THIS_VENV = Path(sys.prefix) if sys.prefix != sys.base_prefix else ROOT / ".venv"
DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/otesse_bench"
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_PREFIX = "otesse-bench:"
READY_MARKER = "Ctrl-C stops everything."
START_SECONDS = 120.0
STOP_SECONDS = 30.0
SCOPE = "bookings:read customers:read"
# Loopback, so the app may use plain http; nothing needs to listen there.
REDIRECT_URI = "http://127.0.0.1:9/bench/callback"
SERVICES = ("registry", "token", "authorize", "gateway", "bookings")
# A tree whose token service serves its public paths at an edge of its own has this module.
EDGE_MODULE = Path("services/gateway/in_process.py")
PORT_VARIABLES = ("OTESSE_GATEWAY_PORT", "OTESSE_GATEWAY_ADMIN_PORT", "OTESSE_AUTHORIZE_PORT",
                  "OTESSE_TOKEN_HTTP_PORT", "OTESSE_TOKEN_GRPC_PORT", "OTESSE_TOKEN_EDGE_PORT",
                  "OTESSE_REGISTRY_GRPC_PORT", "OTESSE_REGISTRY_HTTP_PORT",
                  "OTESSE_BOOKINGS_PORT")


# Run by a new interpreter before it becomes the server: asks the kernel for SIGTERM
# when its parent (the benchmark) dies, checks the parent did not die first, then executes the
# command in its place (the request outlives execve). Self-contained: a checkout of an older
# commit (``bench.compare --baseline``) runs it beside its own code.
_GUARD = ("import ctypes, os, signal, sys\n"
          "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
          "if os.getppid() != int(sys.argv[1]):\n"
          "    sys.exit('the benchmark that started this process has gone')\n"
          "os.execv(sys.argv[2], sys.argv[2:])\n")


def dying_with_parent(argv: list[str]) -> list[str]:
    """``argv``, run so that the process stops (SIGTERM) when this one dies, even killed
    outright: a benchmark killed with SIGKILL must not leave servers running (run-local stops
    its services on SIGTERM). ``argv[0]`` is the program's path.

    The guard runs in a new interpreter (this one's), not as a ``preexec_fn``: that would make
    ``subprocess`` fork this process (no ``vfork``) and run Python between the fork and the exec,
    and a process with gRPC's threads (a test run, the benchmark's own channel) forked so can
    hang in the child before it ever executes the server."""
    return [sys.executable, "-c", _GUARD, str(os.getpid()), *argv]


class StackFailed(Exception):
    """The stack could not be started (the message says which step, the log says more)."""


@dataclass(frozen=True)
class Stack:
    gateway_url: str
    authorize_url: str
    token_url: str
    # Where production's ingress sends the token service's public paths: its own edge
    # (OTESSE_TOKEN_EDGE_PORT), or the gateway for a tree whose token service has none.
    token_public_url: str
    token_grpc: str
    bookings_url: str
    person: Person
    app: App
    database_name: str
    # Service name → process id, to read each one's CPU time.
    pids: dict[str, int]
    # Every signed-up user with their own app (``person`` and ``app`` are the first).
    clients: tuple[tuple[Person, App], ...] = field(default_factory=tuple)


def _admin_url(database_url: str) -> tuple[str, str]:
    """The maintenance database's URL on the same server, and the benchmark database's name."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path="/postgres")), unquote(parts.path.lstrip("/"))


async def drop_database(database_url: str) -> None:
    admin_url, name = _admin_url(database_url)
    try:
        admin = await asyncpg.connect(admin_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StackFailed(f"cannot connect to PostgreSQL ({type(exc).__name__}); is it "
                          "running? (`make stores`)") from None
    try:
        quoted = name.replace('"', '""')
        await admin.execute(f'DROP DATABASE IF EXISTS "{quoted}" WITH (FORCE)')
    finally:
        await admin.close()


async def clear_redis(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


# The rate limits a stack runs with: off, or (``limits``) on as in production, every check
# made, but with bounds one load generator never reaches, so their cost is measured and no
# request is refused.
RATE_LIMIT_VARIABLES = ("OTESSE_GATEWAY_RATE_LOGIN_PER_IP", "OTESSE_GATEWAY_RATE_TOKEN_PER_IP",
                        "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP",
                        "OTESSE_TOKEN_RATE_PER_CLIENT")
UNREACHED_LIMIT = "1000000000/60"


@dataclass(frozen=True)
class AsInProduction:
    """What a stack may do as production does, at a cost every request pays there (off by
    default: the peer does neither)."""

    # The rate limits on (:data:`RATE_LIMIT_VARIABLES`), with bounds no run reaches.
    limits: bool = False
    # Logs at INFO, production's level: an access line per request in the gateway and in the
    # service behind it (else WARNING).
    access_logs: bool = False

    def describe(self) -> str:
        return (f"rate limits {'on, never reached' if self.limits else 'off'}, "
                f"logs at {'INFO (access lines)' if self.access_logs else 'WARNING'}")


def stack_env(database_url: str, redis_url: str, run_dir: str,
              redis_prefix: str = REDIS_PREFIX, *,
              production: AsInProduction = AsInProduction()) -> dict[str, str]:
    """The environment of ``run-local`` and the CLI: none of the caller's ``OTESSE_…``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTESSE_")}
    env.update({name: str(free_port()) for name in PORT_VARIABLES})
    env.update({name: UNREACHED_LIMIT if production.limits else "off"
                for name in RATE_LIMIT_VARIABLES})
    env.update({
        "OTESSE_DATABASE_URL": database_url,
        "OTESSE_REDIS_URL": redis_url,
        "OTESSE_REDIS_PREFIX": redis_prefix,
        "OTESSE_LOG_LEVEL": "INFO" if production.access_logs else "WARNING",
        # One load generator is one client address: the edge's per-address bounds are not
        # what is measured.
        "OTESSE_GATEWAY_MAX_REQUESTS_PER_IP": "100000",
        "OTESSE_RUN_DIR": run_dir,
        "PYTHONUNBUFFERED": "1",
    })
    # run-local wires its services from the ports; the CLI needs the registry's too.
    env["OTESSE_REGISTRY_ADDR"] = f"127.0.0.1:{env['OTESSE_REGISTRY_GRPC_PORT']}"
    return env


def interpreter(venv: Path = THIS_VENV) -> str:
    """The Python ``venv`` runs, as a report names it: its version and prefix, whether the
    executable links ``libpython`` as a shared library (a build that calls its own functions
    through the dynamic linker, pyenv's default) or holds it, and its configure flags. The
    official image's build says ``--enable-optimizations`` and ``--with-lto``; Debian optimizes
    by its own rules (a static executable, built with both), which the flags do not show."""
    probe = ("import platform, sys, sysconfig; c = sysconfig.get_config_var('CONFIG_ARGS') "
             "or ''; maps = open('/proc/self/maps').read(); "
             "print(platform.python_version(), sys.base_prefix, "
             "'shared' if 'libpython' in maps else 'static', "
             "*('' if f in c else 'no' for f in ('--enable-optimizations', '--with-lto')))")
    try:
        done = subprocess.run([str(venv / "bin" / "python"), "-c", probe],
                              capture_output=True, text=True, check=False)
    except OSError:
        return f"{venv} (its Python did not answer)"
    if done.returncode != 0:
        return f"{venv} (its Python did not answer)"
    version, prefix, linked, *marks = done.stdout.split(" ")
    flags = [f"{mark.strip() + ' ' if mark.strip() else ''}{flag}"
             for mark, flag in zip(marks, ("--enable-optimizations", "--with-lto"), strict=True)]
    libpython = ("libpython shared" if linked == "shared"
                 else "libpython in the executable")
    return f"Python {version} ({prefix}; {libpython}; configure: {', '.join(flags)})"


async def _cli(env: dict[str, str], *args: str, root: Path = ROOT,
               venv: Path = THIS_VENV) -> str:
    process = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "otesse-auth"), *args, env=env, cwd=root,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise StackFailed(f"otesse-auth {args[0]} {args[1]} failed: "
                          f"{lines[-1] if lines else process.returncode}")
    return out.decode()


def service_pids(parent: int) -> dict[str, int]:
    """The services ``parent`` started (``run-local``, or a test's stack): ``otesse-auth serve
    NAME`` processes, by name."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"serve" in cmdline:
            name = cmdline[cmdline.index(b"serve") + 1].decode()
            found[name] = int(entry.name)
    return found


async def _wait_ready(log_path: Path, process: asyncio.subprocess.Process) -> bool:
    """Whether ``run-local`` printed its ready line (False: it exited or took too long)."""
    deadline = asyncio.get_running_loop().time() + START_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        if READY_MARKER in log_path.read_text(errors="replace"):
            return True
        if process.returncode is not None:
            return False
        await asyncio.sleep(0.1)
    return False


@contextlib.asynccontextmanager
async def running_stack(*, database_url: str = DATABASE_URL, redis_url: str = REDIS_URL,
                        log_path: Path, clients: int = 1, root: Path = ROOT,
                        redis_prefix: str = REDIS_PREFIX,
                        production: AsInProduction = AsInProduction(),
                        venv: Path = THIS_VENV) -> AsyncIterator[Stack]:
    """The stack, with ``clients`` users each with an app of their own.

    ``root`` is the source tree whose code runs: another one (a checkout of an older commit, as
    ``bench.compare --baseline`` makes) runs with its own code first on ``PYTHONPATH``; two
    stacks at once need two databases and two ``redis_prefix``es. ``venv``: the virtualenv
    whose interpreter runs ``run-local`` and so every service and CLI call (its packages must
    be this tree's pins). ``production``: what it does as production does beyond that
    (:class:`AsInProduction`).
    """
    if not (venv / "bin" / "python").exists():
        raise StackFailed(f"{venv} has no Python (make venv, or make bench-venv)")
    await drop_database(database_url)
    await clear_redis(redis_url, redis_prefix)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="otesse-bench-") as run_dir:
        env = stack_env(database_url, redis_url, run_dir, redis_prefix, production=production)
        if root != ROOT:
            env["PYTHONPATH"] = str(root)
        # Its output goes to a file, not a pipe: a pipe whose reader died (a benchmark killed
        # outright) would break run-local's own shutdown.
        with log_path.open("wb") as log:
            # run-local starts the services on the interpreter it runs on.
            process = await asyncio.create_subprocess_exec(
                *dying_with_parent([str(venv / "bin" / "python"),
                                    str(root / "scripts" / "run-local")]),
                env=env, cwd=root, stdout=log, stderr=asyncio.subprocess.STDOUT)
        try:
            if not await _wait_ready(log_path, process):
                lines = log_path.read_text(errors="replace").rstrip().splitlines()[-8:]
                tail = "\n  ".join(lines)
                raise StackFailed(f"the stack did not start (see {log_path}):\n  {tail}")
            yield await _prepare(env, process.pid, database_url, clients, root, venv)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(process.wait(), STOP_SECONDS)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            await drop_database(database_url)
            await clear_redis(redis_url, redis_prefix)


async def _client(env: dict[str, str], number: int, root: Path,
                  venv: Path) -> tuple[Person, App]:
    person = Person(email=f"bench-{secrets.token_hex(4)}@otesse.test",
                    password=secrets.token_urlsafe(16))
    # "--password=…": a random password may start with "-", which argparse would take for an
    # option (one run in 64).
    await _cli(env, "users", "create", "--email", person.email,
               f"--password={person.password}", root=root, venv=venv)
    name = "Otesse Bench" if number == 0 else f"Otesse Bench {number + 1}"
    created = json.loads(await _cli(
        env, "clients", "create", "--name", name, "--description",
        "The app `make bench` drives.", "--redirect-uri", REDIRECT_URI, "--scope", SCOPE,
        "--json", root=root, venv=venv))
    return person, App(client_id=created["client_id"], client_secret=created["client_secret"],
                       redirect_uri=REDIRECT_URI, scope=SCOPE)


async def _prepare(env: dict[str, str], run_local_pid: int, database_url: str,
                   clients: int, root: Path, venv: Path) -> Stack:
    made = tuple([await _client(env, number, root, venv)
                  for number in range(max(1, clients))])
    person, app = made[0]
    pids = service_pids(run_local_pid)
    missing = [name for name in SERVICES if name not in pids]
    if missing:
        raise StackFailed(f"cannot find the process of {', '.join(missing)}")
    return Stack(
        gateway_url=f"http://127.0.0.1:{env['OTESSE_GATEWAY_PORT']}",
        authorize_url=f"http://127.0.0.1:{env['OTESSE_AUTHORIZE_PORT']}",
        token_url=f"http://127.0.0.1:{env['OTESSE_TOKEN_HTTP_PORT']}",
        token_public_url=(f"http://127.0.0.1:{env['OTESSE_TOKEN_EDGE_PORT']}"
                          if (root / EDGE_MODULE).exists()
                          else f"http://127.0.0.1:{env['OTESSE_GATEWAY_PORT']}"),
        token_grpc=f"127.0.0.1:{env['OTESSE_TOKEN_GRPC_PORT']}",
        bookings_url=f"http://127.0.0.1:{env['OTESSE_BOOKINGS_PORT']}",
        person=person, app=app, database_name=_admin_url(database_url)[1], pids=pids,
        clients=made)
