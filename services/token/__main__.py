"""Entry point: ``python -m services.token`` (or ``otesse-auth serve token``)."""

from __future__ import annotations

from services.common.http import Readiness
from services.common.log import configure_logging
from services.common.serve import run, serve_http
from services.token.app import create_app
from services.token.settings import TokenSettings


def main() -> None:
    settings = TokenSettings.from_env()
    configure_logging("token", settings.log_level)
    readiness = Readiness()
    run(serve_http(create_app(settings, readiness), host=settings.http_host,
                   port=settings.http_port, readiness=readiness,
                   drain_seconds=settings.drain_seconds))


if __name__ == "__main__":
    main()
