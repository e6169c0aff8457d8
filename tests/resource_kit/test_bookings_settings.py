"""Bookings settings: the three validation modes, the feed's bound, and a malformed value stops
start-up naming it."""

from __future__ import annotations

import pytest

from services.bookings.settings import BookingsSettings
from services.common.settings import ConfigError, Env


@pytest.mark.parametrize("mode", ["grpc", "jwks", "local"])
def test_each_mode_is_accepted(mode: str) -> None:
    settings = BookingsSettings.from_env(Env({"OTESSE_BOOKINGS_VALIDATION": mode}))
    assert settings.validation == mode
    assert settings.feed_stale_seconds == 5.0


@pytest.mark.parametrize(("environ", "named"), [
    ({"OTESSE_BOOKINGS_VALIDATION": "cache"}, "OTESSE_BOOKINGS_VALIDATION"),
    ({"OTESSE_BOOKINGS_FEED_STALE_SECONDS": "0.1"}, "OTESSE_BOOKINGS_FEED_STALE_SECONDS"),
    ({"OTESSE_BOOKINGS_FEED_STALE_SECONDS": "soon"}, "OTESSE_BOOKINGS_FEED_STALE_SECONDS"),
], ids=["fails because the mode is unknown", "fails because the bound is below 0.5 s",
        "fails because the bound is not a number"])
def test_malformed_settings_name_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        BookingsSettings.from_env(Env(environ))
    assert named in str(caught.value)
