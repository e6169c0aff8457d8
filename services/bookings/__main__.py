"""Entry point: ``python -m services.bookings`` (or ``otesse-auth serve bookings``)."""

from __future__ import annotations

from services.bookings.app import create_app
from services.bookings.settings import BookingsSettings
from services.common.http import Readiness
from services.common.log import configure_logging
from services.common.serve import run, serve_http


def main() -> None:
    settings = BookingsSettings.from_env()
    configure_logging("bookings", settings.log_level)
    readiness = Readiness()
    run(serve_http(create_app(settings, readiness), host=settings.host, port=settings.port,
                   readiness=readiness))


if __name__ == "__main__":
    main()
