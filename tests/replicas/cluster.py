"""Two replicas each of registry, token, authorize and gateway as real processes, behind HAProxy.

Each replica is ``otesse-auth serve <svc>`` (started like :mod:`tests.integration.stack` starts
the single stack, with its helpers) on free loopback ports, on this run's database and Redis
prefix. HAProxy stands in for Kubernetes:

* the public frontend (the issuer, ``http://localhost:<port>``) is an HTTP proxy, as the
  ingress controller is: the token service's public paths go to the two token replicas' edge
  listeners (``OTESSE_TOKEN_EDGE_PORT``), everything else to the two gateways;
* the gateways reach authorize and token through two TCP frontends
  (``OTESSE_GATEWAY_AUTHORIZE_URL`` / ``_TOKEN_URL``), each over two replicas, as kube-proxy
  does for a Service: per connection, so the gateway's keep-alive connections stay with the
  replica they reached until one side closes them;
* every replica is health-checked on its ``/readyz`` every ``CHECK_INTERVAL_MS`` and taken out
  of the rotation after ``FALL`` failures, back after ``RISE`` successes, as a Service drops
  unready endpoints. A connection that cannot be made goes to the other replica
  (``option redispatch``); a request already sent is never sent twice.

gRPC is not behind HAProxy: every caller (token and authorize to the registry, the bookings API
and the tests to the token service) names both replicas (``ipv4:127.0.0.1:a,127.0.0.1:b``) and
balances per call itself, as it does with a headless Service in Kubernetes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.gateway import routing
from tests.conftest import free_port
from tests.integration.stack import ROOT, service_command, stack_env, wait_ready

REPLICAS = 2
# What each replica is told (OTESSE_SHUTDOWN_DRAIN_SECONDS). HAProxy notices a draining replica
# within FALL checks (0.4-0.6 s); the rest of the drain outlasts the gateway's keep-alive expiry
# (4 s), so no idle connection is left for the stop to close (services/common/serve.py).
DRAIN_SECONDS = 4.5
CHECK_INTERVAL_MS = 200
FALL = 2
RISE = 2
KEY_REFRESH_SECONDS = 1
# After a gRPC server comes back, every client has reconnected to it within the channel's
# maximum reconnect backoff (2 s, ±20 % jitter) and seen it SERVING through its health watch.
GRPC_REJOIN_SECONDS = 3.0
EXIT_SECONDS = 30.0
HAPROXY = "haproxy"

# Per service: the variables of its listeners, and which of them answers /readyz and /metrics.
LISTENERS: dict[str, tuple[str, ...]] = {
    "registry": ("OTESSE_REGISTRY_GRPC_PORT", "OTESSE_REGISTRY_HTTP_PORT"),
    "token": ("OTESSE_TOKEN_HTTP_PORT", "OTESSE_TOKEN_GRPC_PORT", "OTESSE_TOKEN_EDGE_PORT"),
    "authorize": ("OTESSE_AUTHORIZE_PORT",),
    "gateway": ("OTESSE_GATEWAY_PORT", "OTESSE_GATEWAY_ADMIN_PORT"),
    "bookings": ("OTESSE_BOOKINGS_PORT",),
}
ADMIN = {"registry": "OTESSE_REGISTRY_HTTP_PORT", "token": "OTESSE_TOKEN_HTTP_PORT",
         "authorize": "OTESSE_AUTHORIZE_PORT", "gateway": "OTESSE_GATEWAY_ADMIN_PORT",
         "bookings": "OTESSE_BOOKINGS_PORT"}
GRPC = {"registry": "OTESSE_REGISTRY_GRPC_PORT", "token": "OTESSE_TOKEN_GRPC_PORT"}
# Behind HAProxy (a frontend and a backend named for the service): the listener it sends to.
BALANCED = {"gateway": "OTESSE_GATEWAY_PORT", "authorize": "OTESSE_AUTHORIZE_PORT",
            "token": "OTESSE_TOKEN_HTTP_PORT"}
# The public frontend's second backend, as the Ingress routes: the token replicas' edges.
TOKEN_EDGE = "token_edge"
SERVICES = ("registry", "token", "authorize", "gateway")


def ensure_haproxy() -> str:
    """The HAProxy binary; installs Debian's package when missing (scripts/ensure-package), or
    fails the test run with the one line saying what to install."""
    found = shutil.which(HAPROXY) or shutil.which(HAPROXY, path="/usr/sbin:/sbin")
    if found:
        return found
    result = subprocess.run([str(ROOT / "scripts" / "ensure-package"), HAPROXY, "haproxy",
                             "the replica tests"], capture_output=True, text=True)
    found = shutil.which(HAPROXY) or shutil.which(HAPROXY, path="/usr/sbin:/sbin")
    if result.returncode != 0 or not found:
        raise RuntimeError(result.stdout.strip().splitlines()[-1] if result.stdout.strip()
                           else "HAProxy is missing: install Debian's haproxy package")
    return found


@dataclass
class Replica:
    """One ``otesse-auth serve <svc>`` process, startable again on the same ports."""

    service: str
    index: int
    env: dict[str, str]
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # Requests (HTTP) and calls (gRPC) served by its earlier processes.
    served_before: collections.Counter[str] = field(default_factory=collections.Counter)
    # The last count read from the running process's /metrics.
    served_now: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def port(self, variable: str) -> int:
        return int(self.env[variable])

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port(ADMIN[self.service])}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.port(GRPC[self.service])}"

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.name}.log"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        self.served_before += self.served_now
        self.served_now = collections.Counter()
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.process = subprocess.Popen(service_command(self.service), env=self.env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        assert self.process is not None
        wait_ready(self.name, self.admin_url + "/readyz", self.process, self.logs)

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def wait_exit(self, timeout: float = EXIT_SECONDS) -> int | None:
        """The exit code; ``None`` when it had to be killed after ``timeout`` seconds."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]

    def read_served(self) -> collections.Counter[str]:
        """HTTP requests and gRPC calls this process has served (its ``/metrics``; health
        checks and scrapes left out); kept, so the count survives the process."""
        text = httpx.get(self.admin_url + "/metrics", timeout=5).text
        served: collections.Counter[str] = collections.Counter()
        for kind, labels, value in _COUNTS.findall(text):
            if not _NOT_SERVED.search(labels):
                served[kind] += int(float(value))
        self.served_now = served
        return served

    @property
    def served(self) -> collections.Counter[str]:
        return self.served_before + self.served_now

    def requests_at(self, service: str) -> int:
        """HTTP requests its running process answered under the metric label ``service``
        (``token-edge``: at the token service's public listener)."""
        text = httpx.get(self.admin_url + "/metrics", timeout=5).text
        return int(sum(float(value) for kind, labels, value in _COUNTS.findall(text)
                       if kind == "http" and f'service="{service}"' in labels))

    def calls(self, method: str) -> int:
        """Calls of ``method`` (``/pkg.Service/Method``) this process answered."""
        text = httpx.get(self.admin_url + "/metrics", timeout=5).text
        return int(sum(float(value) for kind, labels, value in _COUNTS.findall(text)
                       if kind == "grpc" and f'method="{method}"' in labels))


_COUNTS = re.compile(r"^otesse_(http|grpc)_request_duration_seconds_count\{([^}]*)\} (\S+)$",
                     re.M)
_NOT_SERVED = re.compile(r'route="/(readyz|healthz|metrics)"|method="/grpc\.health')


def haproxy_config(*, frontends: dict[str, int], backends: dict[str, list[tuple[str, int, int]]],
                   stats_socket: Path) -> str:
    """Frontend ``name`` on its port sends to backend ``name``: servers ``(name, port,
    check_port)``, checked on ``GET /readyz``. The public frontend (``gateway``) is an HTTP
    proxy, as an ingress controller is, and sends the token service's public paths (the
    gateway's own routing table) to backend :data:`TOKEN_EDGE`; the others pass TCP
    connections, as kube-proxy does."""
    lines = [
        "global",
        "    nbthread 1",
        "    maxconn 4096",
        f"    stats socket {stats_socket} mode 600 level admin",
        "defaults",
        "    timeout connect 2s",
        # Longer than the gateway's upstream read timeout, so the gateway decides.
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout check 2s",
        "    retries 3",
        "    option redispatch 1",
        f"    default-server inter {CHECK_INTERVAL_MS} fall {FALL} rise {RISE}",
    ]
    # The edge's backend has no frontend of its own: the public one sends to it.
    proxies: list[tuple[str, int | None]] = [*frontends.items(), (TOKEN_EDGE, None)]
    for name, port in proxies:
        public = name in ("gateway", TOKEN_EDGE)
        mode = "http" if public else "tcp"
        if port is not None:
            lines += [
                f"frontend {name}",
                f"    mode {mode}",
                f"    bind 127.0.0.1:{port}",
            ]
        if name == "gateway":
            lines += [
                f"    acl token_path path {' '.join(sorted(routing.TOKEN_PATHS))}",
                f"    acl token_path path_beg {routing.WELL_KNOWN_PREFIX}",
                f"    use_backend {TOKEN_EDGE} if token_path",
            ]
        if port is not None:
            lines.append(f"    default_backend {name}")
        lines += [
            f"backend {name}",
            f"    mode {mode}",
            "    balance roundrobin",
            "    option httpchk",
            "    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost",
            "    http-check expect status 200",
        ]
        if public:
            lines += [
                "    option forwardfor",
                # A new connection per request to the gateways and the token edges; clients
                # keep theirs to HAProxy, which a replica's restart never breaks.
                "    option http-server-close",
                "    timeout http-keep-alive 10s",
                "    retry-on conn-failure",
            ]
        lines += [f"    server {server} 127.0.0.1:{server_port} check port {check_port}"
                  for server, server_port, check_port in backends[name]]
    return "\n".join(lines) + "\n"


@dataclass
class LoadBalancer:
    """An HAProxy process and its admin socket."""

    binary: str
    directory: Path
    frontends: dict[str, int]
    backends: dict[str, list[tuple[str, int, int]]]
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "haproxy.sock"

    def start(self) -> None:
        config = self.directory / "haproxy.cfg"
        config.write_text(haproxy_config(frontends=self.frontends, backends=self.backends,
                                         stats_socket=self.socket_path))
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(config)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        with (self.directory / "haproxy.log").open("ab") as log:
            command = [self.binary, "-db", "-f", str(config)]
            setpriv = shutil.which("setpriv")
            self.process = subprocess.Popen(
                [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command,
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.socket_path.exists():
            assert self.process.poll() is None, (self.directory / "haproxy.log").read_text()
            assert time.monotonic() < deadline, "HAProxy did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` per server (``backend/server``): its ``status`` (UP, DOWN, …) and
        the other columns HAProxy reports."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {f"{row['pxname']}/{row['svname']}": row for row in rows
                if row["svname"] not in ("FRONTEND", "BACKEND")}

    def status(self, replica: Replica) -> str:
        """``replica``'s status (``UP``, ``DOWN``, …) in every backend that has it (a token
        replica is in two: its service's and the public edge's), or ``MIXED``."""
        found = {row["status"].split(" ")[0] for name, row in self.stats().items()
                 if name.endswith(f"/{replica.name}")}
        assert found, replica.name
        return found.pop() if len(found) == 1 else "MIXED"

    async def wait_status(self, replica: Replica, status: str, timeout: float = 15.0) -> float:
        """Seconds until HAProxy reports ``replica`` in ``status`` (``UP`` or ``DOWN``)."""
        start = time.monotonic()
        while (current := self.status(replica)) != status:
            assert time.monotonic() - start < timeout, (replica.name, current)
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    def wait_up(self, replica: Replica, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while (current := self.status(replica)) != "UP":
            assert time.monotonic() < deadline, (replica.name, current)
            time.sleep(0.05)


@dataclass
class Cluster:
    """Where everything answers, and the processes behind it."""

    replicas: dict[str, Replica]
    bookings: Replica
    lb: LoadBalancer
    env: dict[str, str]
    logs: Path

    @property
    def public(self) -> str:
        """The issuer and public entry, ``http://localhost:<port>`` (HAProxy → gateways)."""
        return self.env["OTESSE_ISSUER"]

    @property
    def token_grpc(self) -> str:
        return self.env["OTESSE_TOKEN_GRPC_ADDR"]

    @property
    def registry_grpc(self) -> str:
        return self.env["OTESSE_REGISTRY_ADDR"]

    @property
    def bookings_url(self) -> str:
        return self.bookings.admin_url

    def of(self, service: str) -> list[Replica]:
        return [self.replicas[f"{service}-{index}"] for index in range(REPLICAS)]

    async def restart(self, replica: Replica) -> dict[str, float]:
        """SIGTERM, the load balancer drops it, it drains and exits 0, it starts again and is
        ready (and back in HAProxy, or rejoined by its gRPC clients). Returns the timings."""
        timings: dict[str, float] = {}
        start = time.monotonic()
        replica.signal(signal.SIGTERM)
        if replica.service in BALANCED:
            timings["dropped"] = await self.lb.wait_status(replica, "DOWN")
            # Dropped while it still answers: nothing was sent to a closed port.
            assert replica.running, f"{replica.name} exited before HAProxy dropped it"
        code = await self._wait_exit_counting(replica)
        assert code == 0, f"{replica.name} exited with {code}:\n{replica.log_tail()}"
        timings["exited"] = time.monotonic() - start
        replica.start()
        await asyncio.to_thread(replica.wait_ready)
        timings["ready"] = time.monotonic() - start
        if replica.service in BALANCED:
            await self.lb.wait_status(replica, "UP")
        if replica.service in GRPC:
            await asyncio.sleep(GRPC_REJOIN_SECONDS)
        timings["back"] = time.monotonic() - start
        return timings

    @staticmethod
    async def _wait_exit_counting(replica: Replica) -> int | None:
        """Waits for the exit, reading what it served until it stops answering."""
        waiting = asyncio.create_task(asyncio.to_thread(replica.wait_exit))
        while not waiting.done():
            with contextlib.suppress(httpx.HTTPError):
                await asyncio.to_thread(replica.read_served)
            await asyncio.sleep(0.2)
        return await waiting

    async def kill(self, replica: Replica) -> None:
        """SIGKILL: no drain, connections and calls in flight break."""
        await asyncio.to_thread(replica.read_served)
        replica.signal(signal.SIGKILL)
        await asyncio.to_thread(replica.wait_exit)

    async def start_again(self, replica: Replica) -> None:
        replica.start()
        await asyncio.to_thread(replica.wait_ready)
        if replica.service in BALANCED:
            await self.lb.wait_status(replica, "UP")
        if replica.service in GRPC:
            await asyncio.sleep(GRPC_REJOIN_SECONDS)

    def served_per_replica(self) -> dict[str, collections.Counter[str]]:
        """HTTP requests and gRPC calls each replica served since the cluster started."""
        for replica in self.replicas.values():
            if replica.running:
                replica.read_served()
        return {name: replica.served for name, replica in self.replicas.items()}


def _settings(test_env: dict[str, str], logs: Path) -> dict[str, str]:
    env = stack_env(test_env, logs)
    for name in [key for key in env if key.endswith("_PORT")]:
        del env[name]
    env.update({
        "OTESSE_TOKEN_RATE_PER_CLIENT": "off",
        "OTESSE_GATEWAY_RATE_CLIENT_AUTH_FAILURES_PER_IP": "off",
        "OTESSE_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "OTESSE_TOKEN_KEY_REFRESH_SECONDS": str(KEY_REFRESH_SECONDS),
        # The retry window of the default; a client that lost an answer retries at once.
        "OTESSE_TOKEN_REFRESH_RETRY_WINDOW_SECONDS": "10",
        # Nine processes share a Postgres that other test runs use too.
        "OTESSE_DB_POOL_MIN": "1",
        "OTESSE_DB_POOL_MAX": "4",
    })
    return env


@contextlib.contextmanager
def running_cluster(test_env: dict[str, str], logs: Path) -> Iterator[Cluster]:
    """Starts every replica, HAProxy and the bookings API; stops them at the end, and fails if
    any replica did not exit 0 on SIGTERM."""
    binary = ensure_haproxy()
    env = _settings(test_env, logs)
    replicas = {}
    for service in (*SERVICES, "bookings"):
        for index in range(1 if service == "bookings" else REPLICAS):
            ports = {variable: str(free_port()) for variable in LISTENERS[service]}
            replicas[f"{service}-{index}"] = Replica(service, index, {**env, **ports}, logs)
    frontends = {service: free_port() for service in BALANCED}
    backends = {service: [(f"{service}-{i}", replicas[f"{service}-{i}"].port(variable),
                           replicas[f"{service}-{i}"].port(ADMIN[service]))
                          for i in range(REPLICAS)]
                for service, variable in BALANCED.items()}
    backends[TOKEN_EDGE] = [(f"token-{i}", replicas[f"token-{i}"].port("OTESSE_TOKEN_EDGE_PORT"),
                             replicas[f"token-{i}"].port(ADMIN["token"]))
                            for i in range(REPLICAS)]

    def every(service: str) -> str:
        return "ipv4:" + ",".join(replicas[f"{service}-{i}"].grpc_address
                                  for i in range(REPLICAS))

    shared = {
        "OTESSE_ISSUER": f"http://localhost:{frontends['gateway']}",
        "OTESSE_REGISTRY_ADDR": every("registry"),
        "OTESSE_TOKEN_GRPC_ADDR": every("token"),
        "OTESSE_GATEWAY_AUTHORIZE_URL": f"http://127.0.0.1:{frontends['authorize']}",
        "OTESSE_GATEWAY_TOKEN_URL": f"http://127.0.0.1:{frontends['token']}",
        "OTESSE_BOOKINGS_JWKS_URL":
            f"http://127.0.0.1:{frontends['token']}/.well-known/jwks.json",
    }
    env.update(shared)
    for replica in replicas.values():
        replica.env.update(shared)
    bookings = replicas.pop("bookings-0")
    lb = LoadBalancer(binary, logs, frontends, backends)
    cluster = Cluster(replicas, bookings, lb, env, logs)
    started = [*replicas.values(), bookings]
    try:
        lb.start()
        for replica in started:
            replica.start()
        for replica in started:
            replica.wait_ready()
        for replica in replicas.values():
            if replica.service in BALANCED:
                lb.wait_up(replica)
        yield cluster
    finally:
        for replica in started:
            if replica.running:
                replica.signal(signal.SIGTERM)
        codes = {replica.name: replica.wait_exit() for replica in started
                 if replica.process is not None}
        lb.stop()
    failed = {name: code for name, code in codes.items() if code != 0}
    assert not failed, f"replicas did not exit 0 on SIGTERM: {failed} (logs in {logs})"


def environment_for_cli(cluster: Cluster) -> dict[str, str]:
    """The environment ``otesse-auth`` (the operator CLI) needs to reach this cluster."""
    return {**os.environ, **cluster.env}
