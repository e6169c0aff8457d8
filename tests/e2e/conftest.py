"""A real headless Chromium (Debian ``chromium``) driven by Playwright, for browser tests.

* ``chromium``: one browser for the whole run (starting it costs about a second).
* ``desktop`` / ``phone``: a fresh browser context each (own cookies), 1280×800 or a
  390×844 touch screen, with every console message kept in ``console_messages(context)`` so
  a test can assert that no Content-Security-Policy violation happened.

Mark browser tests ``@pytest.mark.e2e``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}

_MESSAGES: dict[int, list[str]] = {}


def console_messages(context: BrowserContext) -> list[str]:
    """Everything the pages of ``context`` wrote to the console (CSP violations included)."""
    return _MESSAGES.setdefault(id(context), [])


@pytest_asyncio.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


async def _context(chromium: Browser, options: dict[str, Any]) -> BrowserContext:
    context = await chromium.new_context(**options)
    messages = console_messages(context)
    context.on("console", lambda message: messages.append(message.text))
    context.set_default_timeout(10_000)
    return context


@pytest_asyncio.fixture
async def desktop(chromium: Browser) -> AsyncIterator[BrowserContext]:
    context = await _context(chromium, DESKTOP)
    yield context
    await context.close()
    _MESSAGES.pop(id(context), None)


@pytest_asyncio.fixture
async def phone(chromium: Browser) -> AsyncIterator[BrowserContext]:
    context = await _context(chromium, PHONE)
    yield context
    await context.close()
    _MESSAGES.pop(id(context), None)
