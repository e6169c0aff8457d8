"""``otesse-auth serve SERVICE``: runs one service in the foreground (its container command)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

SERVICES = ("gateway", "authorize", "token", "registry", "bookings")


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"services.{args.service}.__main__")
    if args.service == "token":
        # The token service's public listener runs the gateway's edge (imported here only:
        # the other services' processes never load it).
        from services.cli.edge import token_edge

        module.main(edge=token_edge)
    else:
        module.main()
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run one service in the foreground")
    parser.add_argument("service", choices=SERVICES)
    parser.set_defaults(handler=_run)
