"""The uvicorn internals services/common/uvicorn_patches.py relies on are still what it was
written against: the locked version, and the source of every function it overrides, calls or
whose behaviour it assumes. A new uvicorn fails here, loudly, before anything misbehaves: re-read
the patches against the new code, fix them if needed, then record the new fingerprints (and
``UVICORN_VERSION``)."""

from __future__ import annotations

import hashlib
import inspect
import re
from pathlib import Path

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from services.common import uvicorn_patches

ROOT = Path(__file__).resolve().parents[2]

RELIED_ON = {
    # limited_protocol: the methods it overrides and calls, the attributes __init__ sets
    # (transport, client, connections, cycle, loop), the cycle's keep_alive and
    # response_complete, which it sets and reads.
    "HttpToolsProtocol.__init__": "4f08999410347141",
    "HttpToolsProtocol.connection_made": "6efb565ff3d36b91",
    "HttpToolsProtocol.connection_lost": "c91a4c9bf2e29c55",
    "HttpToolsProtocol.data_received": "010a7ae59a5d3b1a",
    "HttpToolsProtocol.eof_received": "5652627579a02369",
    "HttpToolsProtocol.on_message_begin": "96d377fdc7c2baef",
    "HttpToolsProtocol.on_url": "37be44e962b04ca8",
    "HttpToolsProtocol.on_header": "65d62c044f61fdbd",
    "HttpToolsProtocol.on_headers_complete": "1ea8589acfad92d8",
    "HttpToolsProtocol.send_400_response": "ae5a4a3782b646fd",
    "HttpToolsProtocol.on_response_complete": "64e254f28e389e76",
    "HttpToolsProtocol.shutdown": "d7351fa33f00d430",
    "RequestResponseCycle.__init__": "4d2f220910c33c12",
    "RequestResponseCycle.send": "abdd8601b326a8da",
    # DrainingServer and SignalFreeServer: the handler and hooks they replace or extend, the
    # loop that calls on_tick, the shutdown that honours force_exit, the flags __init__ sets.
    "Server.__init__": "c150b55284f7511e",
    "Server.handle_exit": "553276efa26e09ea",
    "Server.on_tick": "60ea49b06ccf68c1",
    "Server.capture_signals": "e1bbcd4770d1c887",
    "Server.main_loop": "afccb353a119333f",
    "Server.shutdown": "9b33c50562992b1e",
    "Server.serve": "112ef41af52167e3",
}
_OWNERS = {"HttpToolsProtocol": HttpToolsProtocol, "RequestResponseCycle": RequestResponseCycle,
           "Server": uvicorn.Server}


def test_the_patches_were_written_for_the_locked_and_installed_uvicorn() -> None:
    locked = re.search(r"^uvicorn==(\S+) ", (ROOT / "requirements.lock").read_text(),
                       re.MULTILINE)
    assert locked is not None, "requirements.lock no longer pins uvicorn"
    assert locked.group(1) == uvicorn_patches.UVICORN_VERSION, (
        f"requirements.lock pins uvicorn {locked.group(1)}; services/common/uvicorn_patches.py "
        f"was written for {uvicorn_patches.UVICORN_VERSION}: re-check every patch")
    assert uvicorn.__version__ == uvicorn_patches.UVICORN_VERSION


@pytest.mark.parametrize("name", list(RELIED_ON), ids=list(RELIED_ON))
def test_uvicorn_still_has_what_the_patches_are_built_on(name: str) -> None:
    owner, method = name.split(".")
    source = inspect.getsource(getattr(_OWNERS[owner], method))
    fingerprint = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert fingerprint == RELIED_ON[name], (
        f"uvicorn {uvicorn.__version__} changed {name}: re-check "
        "services/common/uvicorn_patches.py against it before updating RELIED_ON")


@pytest.mark.parametrize(("patched", "method"), [
    (uvicorn_patches.DrainingServer, "handle_exit"),
    (uvicorn_patches.DrainingServer, "on_tick"),
    (uvicorn_patches.SignalFreeServer, "capture_signals"),
], ids=["handle_exit", "on_tick", "capture_signals"])
def test_each_replaced_server_method_keeps_uvicorns_signature(patched: type[uvicorn.Server],
                                                              method: str) -> None:
    """uvicorn calls these itself: a signature drift would break the call, not the import."""
    ours = inspect.signature(getattr(patched, method))
    theirs = inspect.signature(getattr(uvicorn.Server, method))
    assert list(ours.parameters) == list(theirs.parameters)


def test_no_other_module_touches_uvicorn_internals() -> None:
    """The one place: no other module imports uvicorn's protocols or subclasses its Server."""
    offenders = []
    for path in (ROOT / "services").rglob("*.py"):
        if path.name == "uvicorn_patches.py":
            continue
        text = path.read_text()
        if "uvicorn.protocols" in text or "(uvicorn.Server)" in text or \
                "capture_signals" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
