"""The README's walkthrough, executed against a running stack, so the docs cannot rot.

Every fenced block of the README's "Walkthrough" section is used, in order:

* a ``sh`` block is run with bash against the test stack (``http://localhost:8000`` and
  ``http://localhost:8100`` replaced by the stack's gateway and bookings addresses, the
  placeholders in capitals by the values earlier steps returned); the ``json`` or ``text``
  block right after it is the output it must print;
* the ``text`` block holding the authorization URL is opened by a person with a browser (sign
  in, approve: form posts through the gateway), and the ``text`` block showing the callback must
  be exactly where that person lands, with ``AUTH_CODE`` standing for the code.

In an expected JSON output an object has exactly the keys shown; a string ending in ``…``
matches any string starting with what comes before it (``"…"`` alone: any value); a list
ending in ``"…"`` matches a list starting with the items shown.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.integration.people import FormBrowser, Person, callback_params
from tests.integration.stack import Stack

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED_CLI = ".venv/bin/otesse-auth"
DOCUMENTED_GATEWAY = "http://localhost:8000"
DOCUMENTED_BOOKINGS = "http://localhost:8100"
PLACEHOLDERS = ("YOUR_CLIENT_ID", "YOUR_CLIENT_SECRET", "AUTH_CODE", "ACCESS_TOKEN",
                "REFRESH_TOKEN")
ELLIPSIS = "…"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    language: str
    body: str


def walkthrough_blocks() -> list[Block]:
    text = README.read_text()
    start = text.index("\n## Walkthrough")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else None]
    return [Block(language, body) for language, body in _FENCE.findall(section)]


def matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and expected.endswith(ELLIPSIS):
        return expected == ELLIPSIS or (
            isinstance(actual, str) and actual.startswith(expected[:-1]))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and set(expected) == set(actual)
                and all(matches(value, actual[key]) for key, value in expected.items()))
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return False
        if expected and expected[-1] == ELLIPSIS:
            shown = expected[:-1]
            return len(actual) >= len(shown) and all(map(matches, shown, actual))
        return len(expected) == len(actual) and all(map(matches, expected, actual))
    return bool(expected == actual and type(expected) is type(actual))


class Walkthrough:
    """What a reader has collected so far, and how a documented text becomes a real one.

    ``cli`` is the command that stands for the documented ``.venv/bin/otesse-auth`` (the
    containers run it inside one of theirs)."""

    def __init__(self, stack: Stack, *, cli: str = DOCUMENTED_CLI) -> None:
        self.stack = stack
        self.cli = cli
        self.values: dict[str, str] = {}
        self.landed: str | None = None
        self.ran: list[str] = []

    def real(self, text: str) -> str:
        text = text.replace(DOCUMENTED_CLI, self.cli)
        text = text.replace(DOCUMENTED_GATEWAY, self.stack.gateway)
        text = text.replace(quote(DOCUMENTED_GATEWAY, safe=""),
                            quote(self.stack.gateway, safe=""))
        text = text.replace(DOCUMENTED_BOOKINGS, self.stack.bookings)
        for name, value in self.values.items():
            text = text.replace(name, value)
        left = [name for name in PLACEHOLDERS if name in text]
        assert not left, f"no earlier step gave a value for {left} in:\n{text}"
        return text

    def run(self, command: str) -> str:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", self.real(command)],
                                env=self.stack.env, cwd=README.parent, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"{command}\nfailed: {result.stderr}"
        self.ran.append(command)
        return result.stdout

    def check(self, output: str, expected: Block, command: str) -> None:
        if expected.language == "json":
            document = json.loads(output)
            wanted = json.loads(self.real(expected.body))
            assert matches(wanted, document), (
                f"{command}\nprinted {json.dumps(document, indent=2)}\n"
                f"but the README shows {expected.body}")
            self.learn(document)
        else:
            assert output.strip() == self.real(expected.body).strip(), (command, output)

    def learn(self, document: Any) -> None:
        if not isinstance(document, dict):
            return
        if "client_secret" in document:
            self.values["YOUR_CLIENT_ID"] = document["client_id"]
            self.values["YOUR_CLIENT_SECRET"] = document["client_secret"]
        if "access_token" in document:
            self.values["ACCESS_TOKEN"] = document["access_token"]
            self.values["REFRESH_TOKEN"] = document["refresh_token"]


async def walk_through(walk: Walkthrough, person: Person) -> None:
    """Runs every block of the walkthrough in order, ``person`` signing in and approving."""
    blocks = walkthrough_blocks()
    stack = walk.stack
    index = 0
    while index < len(blocks):
        block = blocks[index]
        index += 1
        if block.language == "sh":
            output = walk.run(block.body)
            following = blocks[index] if index < len(blocks) else None
            if following is not None and following.language in ("json", "text") and not (
                    "/oauth/authorize?" in following.body or "?code=" in following.body):
                walk.check(output, following, block.body)
                index += 1
        elif "/oauth/authorize?" in block.body:
            # Step 3 needs a person with a browser: sign in and approve.
            async with FormBrowser(stack.gateway) as browser:
                walk.landed = await browser.authorize(walk.real(block.body.strip()), person)
            walk.values["AUTH_CODE"] = callback_params(walk.landed)["code"]
        elif "?code=" in block.body:
            assert walk.landed == walk.real(block.body.strip())
        else:
            raise AssertionError(f"a walkthrough block the test cannot use:\n{block.body}")

    steps = {
        "register an app": "clients create",
        "exchange the code": '"grant_type": "authorization_code"',
        "call the API": "/v1/bookings",
        "refresh": '"grant_type": "refresh_token"',
        "revoke": "/oauth/revoke",
    }
    missing = [step for step, marker in steps.items()
               if not any(marker in command for command in walk.ran)]
    assert not missing, f"the walkthrough no longer shows: {missing}"
    assert walk.landed is not None, "the walkthrough no longer opens an authorization URL"
