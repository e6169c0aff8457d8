"""Entry point: ``python -m services.authorize`` (or ``otesse-auth serve authorize``)."""

from __future__ import annotations

from services.authorize.app import create_app
from services.authorize.settings import AuthorizeSettings
from services.common.http import Readiness
from services.common.log import configure_logging
from services.common.serve import run, serve_http


def main() -> None:
    settings = AuthorizeSettings.from_env()
    configure_logging("authorize", settings.log_level)
    readiness = Readiness()
    run(serve_http(create_app(settings, readiness), host=settings.host, port=settings.port,
                   readiness=readiness, drain_seconds=settings.drain_seconds))


if __name__ == "__main__":
    main()
