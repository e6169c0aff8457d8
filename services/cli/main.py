"""``otesse-auth`` entry point: one subcommand module per noun, each with ``register()``.

With no environment set, every command uses the same local defaults as the services, so it
talks to the stack that ``make run`` started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services.cli import audit, clients, grants, keys, migrate, purge, serve, users
from services.common.log import request_id_var
from services.common.request_id import new_request_id
from services.common.settings import ConfigError

COMMANDS = (migrate, users, clients, grants, keys, audit, purge, serve)


class CommandError(Exception):
    """A command failed in a way the operator can fix; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otesse-auth", description="Operate Otesse Auth.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # One request id per command, sent with its gRPC calls and kept in the audit events it
    # causes, so an operator's change can be found in every service's logs.
    request_id_var.set(new_request_id())
    try:
        code = args.handler(args)
    except ConfigError as exc:
        print(f"otesse-auth: configuration error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # one line for the operator, no traceback
        message = getattr(exc, "cli_message", None) or f"{type(exc).__name__}: {exc}"
        print(f"otesse-auth: {message}", file=sys.stderr)
        code = 1
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
