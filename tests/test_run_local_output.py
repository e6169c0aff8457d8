"""``make run`` stops every service even when whoever read its output has gone away (a closed
terminal, a pipe whose reader died): writing to a broken pipe must not skip the stop."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.conftest import free_port
from tests.gateway.test_run_local import PORT_VARIABLES, _port_free, _read_until, _start


def test_services_stop_when_the_output_reader_is_gone(test_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTESSE_")}
    env.update(test_env, OTESSE_RUN_DIR=str(tmp_path))
    env.update({name: str(free_port()) for name in PORT_VARIABLES})
    process = _start(env)
    try:
        _read_until(process, "Ctrl-C stops everything.")
        ports = [int(env[name]) for name in PORT_VARIABLES]
        assert not any(_port_free(port) for port in ports)
        assert process.stdout is not None
        process.stdout.close()  # the reader dies
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) in (0, 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_port_free(port) for port in ports):
            time.sleep(0.1)
        assert all(_port_free(port) for port in ports), "a service outlived run-local"
    finally:
        if process.poll() is None:
            process.kill()
