"""The "Register App" / "Edit app" form: reading it safely, and the first checks of what was
typed (RFC 7591 §2 client metadata; RFC 6749 §3.1.2 redirection endpoint).

The body is read with a hard byte cap before anything is parsed, so a 20 MB "logo" costs at
most :data:`MAX_FORM_BYTES` of memory and ends in a clear 413 page. The checks here only make
the common mistakes friendly (nothing typed, no scope chosen, an empty or oversized file); the
registry decides everything else — redirect URI rules, and whether a logo really is a PNG, JPEG
or WebP image, by its content — and its verdict is shown next to the field it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from services.authorize.developer_apps import AppDetails, ClientType, InvalidField
from services.authorize.pages import page
from services.common import scopes as scope_catalogue

# The registry's own limit (services/registry/logos.py); checked here too, for a kinder message.
MAX_LOGO_BYTES = 1024 * 1024
# A form with the largest logo and every text field full fits well inside this.
MAX_FORM_BYTES = MAX_LOGO_BYTES + 256 * 1024
MAX_REDIRECT_URIS = 10
_MAX_FIELD_BYTES = 64 * 1024
_MAX_FIELDS = 40
CLIENT_TYPES: tuple[ClientType, ...] = ("confidential", "public")

# The registry names fields by their protobuf names; the form by its own.
_FORM_FIELDS = {"name": "name", "description": "description", "redirect_uris": "redirect_uris",
                "allowed_scopes": "scopes", "logo": "logo", "client_type": "client_type"}
_LABELS = {"name": "App name", "description": "Description", "redirect_uris": "Redirect URI",
           "scopes": "Scopes", "logo": "Logo", "client_type": "App type"}


class FormTooLarge(Exception):
    """The form's body is over :data:`MAX_FORM_BYTES` (in practice: the logo file is)."""


@dataclass(frozen=True)
class Submitted:
    """What the browser sent: every text field, and the logo file if one was chosen."""

    fields: tuple[tuple[str, str], ...]
    # None: no file was chosen. b"": a file was chosen, and it is empty.
    logo: bytes | None

    def get(self, name: str) -> str:
        return next((value for key, value in self.fields if key == name), "")

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]


@dataclass
class AppForm:
    """The form as shown: what was typed (kept across errors) and each field's problem."""

    name: str = ""
    description: str = ""
    redirect_uris: str = ""
    scopes: tuple[str, ...] = ()
    client_type: str = "confidential"
    errors: dict[str, str] = field(default_factory=dict)

    def context(self) -> Mapping[str, Any]:
        return {"form": self, "catalogue": [
            {"name": name, "sentence": sentence}
            for name, sentence in scope_catalogue.CATALOGUE.items()]}

    def details(self) -> AppDetails:
        return AppDetails(name=self.name, description=self.description,
                          redirect_uris=tuple(uri_lines(self.redirect_uris)),
                          scopes=self.scopes)

    def refused(self, problem: InvalidField) -> None:
        """Shows the registry's verdict next to the field it names."""
        name = _FORM_FIELDS.get(problem.field, "form")
        text = problem.problem.strip() or "is not valid"
        if text.split(" ", 1)[0] in ("is", "must", "are"):
            text = f"{_LABELS.get(name, 'This field')} {text}"
        self.errors[name] = text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def uri_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


async def read(request: Request) -> Submitted:
    """The form, read with a hard cap; raises :class:`FormTooLarge` past it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise FormTooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge()
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    form = await Request(request.scope, replay).form(
        max_files=1, max_fields=_MAX_FIELDS, max_part_size=_MAX_FIELD_BYTES)
    try:
        return await _submitted(form)
    finally:
        await form.close()


async def _submitted(form: FormData) -> Submitted:
    fields: list[tuple[str, str]] = []
    logo: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key == "logo" and value.filename:
                logo = await value.read()
        else:
            fields.append((key, value))
    return Submitted(tuple(fields), logo)


def parse(submitted: Submitted, *, with_type: bool) -> AppForm:
    """What was typed, with the problems found before asking the registry."""
    form = AppForm(
        name=submitted.get("name").strip(),
        # HTML §4.10.11: a textarea's value is submitted with CRLF line breaks.
        description=submitted.get("description").replace("\r\n", "\n").strip(),
        redirect_uris="\n".join(uri_lines(submitted.get("redirect_uris"))),
        scopes=tuple(s for s in scope_catalogue.CATALOGUE if s in submitted.getlist("scope")),
        client_type=submitted.get("client_type") or "confidential")
    if not form.name:
        form.errors["name"] = "Enter a name for your app."
    uris = uri_lines(form.redirect_uris)
    if not uris:
        form.errors["redirect_uris"] = "Add at least one redirect URI."
    elif len(uris) > MAX_REDIRECT_URIS:
        form.errors["redirect_uris"] = f"Add at most {MAX_REDIRECT_URIS} redirect URIs."
    unknown = scope_catalogue.unknown(submitted.getlist("scope"))
    if unknown:
        form.errors["scopes"] = f"Unknown scope {unknown[0]!r}."
    elif not form.scopes:
        form.errors["scopes"] = "Choose at least one scope your app may request."
    if with_type and form.client_type not in CLIENT_TYPES:
        form.errors["client_type"] = "Choose Confidential or Public."
    problem = logo_problem(submitted.logo)
    if problem:
        form.errors["logo"] = problem
    return form


def logo_problem(logo: bytes | None) -> str | None:
    if logo is None:
        return None
    if not logo:
        return "The file is empty. Choose a PNG, JPEG or WebP image."
    if len(logo) > MAX_LOGO_BYTES:
        return (f"The file is {len(logo) / (1024 * 1024):.1f} MB; logos can be at most 1 MB. "
                "Choose a smaller image.")
    return None


async def too_large_page(request: Request, exc: Exception) -> Response:
    return page(request, "error.html", {
        "title": "This file is too large", "status": 413,
        "description": "Logos can be at most 1 MB (PNG, JPEG or WebP). Go back, choose a "
                       "smaller image and try again."}, status=413)
