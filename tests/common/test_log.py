"""Logs are JSON lines with the request id, and never carry a token or secret."""

from __future__ import annotations

import json
import logging
import time

import pytest

from services.common import credentials
from services.common.log import JsonFormatter, request_id_var, scrub


def record(message: str, **extra: object) -> logging.LogRecord:
    log_record = logging.makeLogRecord({"name": "t", "levelno": 20, "levelname": "INFO",
                                        "msg": message, "args": ()})
    for key, value in extra.items():
        setattr(log_record, key, value)
    return log_record


def test_one_json_object_per_line_with_request_id() -> None:
    token = request_id_var.set("req-123")
    try:
        line = JsonFormatter("registry").format(record("hello", method="GET"))
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["request_id"] == "req-123"
    assert entry["service"] == "registry"
    assert entry["msg"] == "hello"
    assert entry["method"] == "GET"
    assert "\n" not in line


def test_uvicorn_colour_duplicates_are_dropped() -> None:
    entry = json.loads(JsonFormatter("gateway").format(
        record("Finished server process [1]", color_message="Finished \x1b[36m1\x1b[0m")))
    assert "color_message" not in entry


@pytest.mark.parametrize("secret", [
    credentials.new_credential("otesse_rt_"),
    credentials.new_credential("otesse_cs_"),
    "otesse_at_eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    "Bearer abc.def.ghi",
    "bEaReR abc.def.ghi",
    "café: Bearer abc.def.ghi",
    "naïve otesse_rt_abc",
], ids=["refresh token", "client secret", "access token", "bearer header", "bearer in any case",
        "bearer on a non-ascii line", "token on a non-ascii line"])
def test_tokens_and_secrets_are_scrubbed(secret: str) -> None:
    line = JsonFormatter("token").format(record(f"got {secret} here", header=secret))
    assert secret not in line
    assert "[redacted]" in line
    assert "[redacted]" in scrub(secret)


def test_a_line_without_a_secret_is_left_as_it_is() -> None:
    line = '{"msg": "request", "path": "/oauth/token", "client": "café"}'
    assert scrub(line) == line


@pytest.mark.parametrize("created", [1796420991.0, 1796420991.0005, 1796420991.999,
                                     1796420992.25, 1796420991.5],
                         ids=["on the second", "half a ms", "last ms", "next second", "back"])
def test_the_timestamp_is_the_records_own_to_the_millisecond(created: float) -> None:
    """Seconds are formatted once each and reused: every line still has its own time."""
    formatter = JsonFormatter("token")
    formatter.format(record("earlier", created=1796420991.75))
    log_record = record("now")
    log_record.created = created
    stamp = json.loads(formatter.format(log_record))["ts"]
    expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(created)))
    assert stamp == f"{expected}.{int(round(created % 1, 6) * 1000):03d}Z"
