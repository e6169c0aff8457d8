"""The authorization request (RFC 6749 §4.1.1, §3.1, §3.1.2, §3.3; RFC 7636 §4.3; OpenID
Connect Core §3.1.2.1 for ``prompt``).

Checks run in a fixed order. Until the client and its redirect URI are known to belong
together, nothing is redirected anywhere: the user sees a 400 page (RFC 6749 §4.1.2.1: "the
authorization server SHOULD inform the resource owner of the error and MUST NOT
automatically redirect the user-agent to the invalid redirection URI"). After that, every
problem is sent back to the client as an error redirect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from otesse.auth.v1 import registry_pb2
from services.authorize import pkce
from services.authorize.authorization_response import AuthorizationErrorRedirect
from services.authorize.clients import ClientDirectory
from services.common import scopes as scope_catalogue
from services.common.errors import (
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnsupportedResponseType,
)

Prompt = Literal["none", "login", "consent"]
PROMPTS: frozenset[str] = frozenset({"none", "login", "consent"})
PARAMETERS = ("client_id", "redirect_uri", "response_type", "scope", "state",
              "code_challenge", "code_challenge_method", "prompt")
MAX_PARAMETER_LENGTH = 2048
MAX_STATE_LENGTH = 1024


class BadClientRequest(InvalidRequest):
    """The client or its redirect URI cannot be trusted: shown to the user, never redirected."""


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str
    code_challenge_method: str
    prompt: frozenset[str]

    def to_record(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "redirect_uri": self.redirect_uri,
                "scopes": list(self.scopes), "state": self.state,
                "code_challenge": self.code_challenge,
                "code_challenge_method": self.code_challenge_method,
                "prompt": sorted(self.prompt)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AuthorizationRequest:
        return cls(client_id=record["client_id"], redirect_uri=record["redirect_uri"],
                   scopes=tuple(record["scopes"]), state=record["state"],
                   code_challenge=record["code_challenge"],
                   code_challenge_method=record["code_challenge_method"],
                   prompt=frozenset(record["prompt"]))


def _collect(pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, str], set[str]]:
    values: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in pairs:
        # RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they were
        # omitted from the request."
        if name not in PARAMETERS or value == "":
            continue
        # RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once."
        if name in values:
            repeated.add(name)
        values[name] = value
    return values, repeated


def parse_prompt(value: str | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    prompt = frozenset(value.split())
    unknown = prompt - PROMPTS
    if unknown:
        raise InvalidRequest("prompt must be none, login or consent.")
    # OpenID Connect Core §3.1.2.1: "If this parameter contains none with any other value, an
    # error is returned."
    if "none" in prompt and len(prompt) > 1:
        raise InvalidRequest("prompt=none cannot be combined with other values.")
    return prompt


def _scopes(value: str | None, client: registry_pb2.Client) -> tuple[str, ...]:
    if value is None:
        raise InvalidScope("scope is required.")
    try:
        requested = scope_catalogue.parse(value)
    except ValueError:
        raise InvalidScope("scope is malformed.") from None
    if not requested:
        raise InvalidScope("scope is required.")
    if scope_catalogue.unknown(requested):
        raise InvalidScope("scope contains an unknown scope.")
    allowed = set(client.allowed_scopes)
    if any(scope not in allowed for scope in requested):
        raise InvalidScope("scope exceeds what this client may request.")
    return tuple(scope_catalogue.join(requested).split(" "))


async def validate(pairs: Sequence[tuple[str, str]], *, clients: ClientDirectory,
                   ) -> tuple[registry_pb2.Client, AuthorizationRequest]:
    """The client and the checked request, or raises :class:`BadClientRequest` (a page) or
    :class:`AuthorizationErrorRedirect` (back to the client)."""
    values, repeated = _collect(pairs)
    if {"client_id", "redirect_uri"} & repeated:
        raise BadClientRequest("The request names its app or its return address more than once.")
    client_id = values.get("client_id")
    if client_id is None:
        raise BadClientRequest("The request does not say which app is asking (client_id).")
    client = await clients.get(client_id=client_id)
    if client is None:
        raise BadClientRequest("The app that sent you here is not registered with Otesse.")
    redirect_uri = values.get("redirect_uri")
    if redirect_uri is None:
        raise BadClientRequest("The request does not say where to return (redirect_uri).")
    # RFC 6749 §3.1.2.3 / RFC 9700 §4.1.3: compare the redirect URI by exact string match.
    if redirect_uri not in client.redirect_uris:
        raise BadClientRequest("The return address in the request is not registered for "
                               "this app.")

    state = values.get("state")
    if "state" in repeated or (state is not None and len(state) > MAX_STATE_LENGTH):
        state = None

    def fail(error: OAuthError) -> AuthorizationErrorRedirect:
        return AuthorizationErrorRedirect(error, redirect_uri=redirect_uri, state=state)

    if repeated:
        raise fail(InvalidRequest(f"{sorted(repeated)[0]} is included more than once."))
    too_long = [name for name, value in values.items() if len(value) > MAX_PARAMETER_LENGTH]
    if too_long:
        raise fail(InvalidRequest(f"{too_long[0]} is too long."))
    if state is None and "state" in values:
        raise fail(InvalidRequest(f"state is longer than {MAX_STATE_LENGTH} characters."))
    response_type = values.get("response_type")
    if response_type is None:
        raise fail(InvalidRequest("response_type is required."))
    if response_type != "code":
        raise fail(UnsupportedResponseType("response_type must be code."))
    try:
        requested = _scopes(values.get("scope"), client)
        challenge, method = pkce.check(
            challenge=values.get("code_challenge"), method=values.get("code_challenge_method"),
            public_client=client.client_type == registry_pb2.CLIENT_TYPE_PUBLIC)
        prompt = parse_prompt(values.get("prompt"))
    except OAuthError as exc:
        raise fail(exc) from None
    return client, AuthorizationRequest(
        client_id=client.client_id, redirect_uri=redirect_uri, scopes=requested, state=state,
        code_challenge=challenge, code_challenge_method=method, prompt=prompt)
