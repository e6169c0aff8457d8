"""``otesse-auth purge``: provided by the token service (not built yet)."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("'purge' arrives with the token service")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("purge", help="(arrives with the token service)")
    parser.set_defaults(handler=_run)
