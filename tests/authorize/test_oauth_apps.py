"""Settings > Integrations > OAuth Apps over real HTTP, against the real registry, token
service, Redis and Postgres: list, Register App, the secret shown once, edit, rotate, delete."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from otesse.auth.v1 import registry_pb2, registry_pb2_grpc, token_pb2
from tests.authorize.settings_stack import (
    APPS,
    CALLBACK,
    Pages,
    User,
    app_form,
    field_error,
    grant_tokens,
    input_value,
    listed_app_ids,
    register,
    shown_secret,
    textarea,
)
from tests.images import image_bytes

pytest_plugins = ["tests.authorize.settings_fixtures"]


async def test_a_new_user_sees_the_empty_state(alice: User) -> None:
    page = await alice.page(APPS)
    assert page.status_code == 200
    assert "No apps yet" in page.text and f'href="{APPS}/new"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert alice.person.email in page.text  # the header's account menu
    assert 'action="/logout"' in page.text


@pytest.mark.parametrize("path", [APPS, f"{APPS}/new", "/settings/authorized-apps",
                                  f"{APPS}/otesse_ci_x", f"{APPS}/otesse_ci_x/delete",
                                  f"{APPS}/otesse_ci_x/credentials"],
                         ids=["list", "new", "authorized", "app", "delete", "credentials"])
async def test_signed_out_visitors_go_to_login_and_back(pages: Pages, path: str) -> None:
    async with httpx.AsyncClient(base_url=pages.url) as http:
        response = await http.get(path, params={"tab": "1"} if path == APPS else None)
    assert response.status_code == 302
    expected = path + ("?tab=1" if path == APPS else "")
    assert response.headers["location"] == "/login?" + urlencode({"next": expected})


@pytest.mark.parametrize("path", [f"{APPS}/new", f"{APPS}/otesse_ci_x",
                                  f"{APPS}/otesse_ci_x/rotate-secret",
                                  f"{APPS}/otesse_ci_x/delete",
                                  "/settings/authorized-apps/otesse_ci_x/revoke"],
                         ids=["register", "update", "rotate", "delete", "revoke"])
async def test_signed_out_posts_change_nothing_and_go_to_login(pages: Pages, path: str) -> None:
    async with httpx.AsyncClient(base_url=pages.url) as http:
        response = await http.post(path, data=app_form())
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=%2Fsettings%2F")


async def test_register_shows_the_credentials_once(alice: User, registry: Any) -> None:
    app = await register(alice, logo=image_bytes(size=(96, 96)), name="Calendar Sync",
                         scopes=["bookings:read", "customers:read"],
                         redirect_uris=f"{CALLBACK}\nhttp://127.0.0.1:8765/cb")
    assert app.client_id.startswith("otesse_ci_")
    assert app.client_secret.startswith("otesse_cs_")
    assert "You won't see this secret again" in app.credentials_page
    # The secret works: the registry authenticates the client with it.
    stub: registry_pb2_grpc.ClientRegistryAsyncStub = registry
    authenticated = await stub.AuthenticateClient(registry_pb2.AuthenticateClientRequest(
        client_id=app.client_id, client_secret=app.client_secret))
    assert list(authenticated.client.redirect_uris) == [CALLBACK, "http://127.0.0.1:8765/cb"]
    assert list(authenticated.client.allowed_scopes) == ["bookings:read", "customers:read"]
    assert authenticated.client.owner_user_id == alice.person.user_id
    assert authenticated.client.logo_content_type == "image/png"
    # A reload (or Back) shows it no more.
    again = await alice.page(f"{APPS}/{app.client_id}/credentials")
    assert again.status_code == 200
    assert app.client_secret not in again.text
    assert "already shown" in again.text
    listing = await alice.page(APPS)
    assert listed_app_ids(listing.text) == [app.client_id]
    assert "Calendar Sync" in listing.text and "Confidential" in listing.text


async def test_the_credentials_page_is_never_cached_and_runs_only_our_script(
        alice: User) -> None:
    response = await alice.http.post(f"{APPS}/new", data={
        "csrf_token": alice.csrf, **app_form()})
    assert response.status_code == 303
    location = response.headers["location"]
    assert "otesse_cs_" not in location
    shown = await alice.http.get(location)
    assert shown.headers["cache-control"] == "no-store"
    csp = shown.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp
    assert '<script src="/static/copy.js?v=' in shown.text
    assert "<script>" not in shown.text  # nothing inline
    script = await alice.http.get("/static/copy.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith(("text/javascript",
                                                      "application/javascript"))


async def test_the_secret_is_shown_only_to_the_session_that_registered(
        alice: User, pages: Pages) -> None:
    response = await alice.post(f"{APPS}/new", app_form())
    location = response.headers["location"]
    # The same user signed in elsewhere (another session) sees no secret at that address.
    async with httpx.AsyncClient(base_url=pages.url) as other:
        form = await other.get("/login")
        from tests.authorize.conftest import csrf_token, fresh_ip
        await other.post("/login", data={"email": alice.person.email,
                                         "password": alice.person.password,
                                         "csrf_token": csrf_token(form.text)},
                         headers={"X-Forwarded-For": fresh_ip()})
        elsewhere = await other.get(location)
    assert elsewhere.status_code == 200 and "otesse_cs_" not in elsewhere.text
    mine = await alice.page(location)
    assert "otesse_cs_" in mine.text


async def test_a_public_app_gets_no_secret(alice: User, registry: Any) -> None:
    app = await register(alice, client_type="public", name="Pocket Planner")
    assert app.client_secret == ""
    assert "public app: it has no client secret" in app.credentials_page
    stub: registry_pb2_grpc.ClientRegistryAsyncStub = registry
    found = await stub.GetClient(registry_pb2.GetClientRequest(client_id=app.client_id))
    assert found.client.client_type == registry_pb2.CLIENT_TYPE_PUBLIC
    edit = await alice.page(f"{APPS}/{app.client_id}")
    assert "rotate-secret" not in edit.text
    refused = await alice.post(f"{APPS}/{app.client_id}/rotate-secret", {"overlap": "none"})
    assert refused.status_code == 400 and "no secret to rotate" in refused.text


LONG = "x" * 101
FORM_ERRORS = [
    ({"name": "  "}, "name", "Enter a name for your app."),
    ({"name": LONG}, "name", "App name must be at most 100 characters."),
    ({"name": "Tab\tname"}, "name", "App name must not contain control characters."),
    ({"description": "d" * 1001}, "description",
     "Description must be at most 1000 characters."),
    ({"redirect_uris": " \n "}, "redirect_uris", "Add at least one redirect URI."),
    ({"redirect_uris": "http://app.example.com/cb"}, "redirect_uris",
     "'http://app.example.com/cb' must use https (http only for loopback hosts)."),
    ({"redirect_uris": "https://app.example.com/cb#frag"}, "redirect_uris",
     "'https://app.example.com/cb#frag' must not contain a fragment."),
    ({"redirect_uris": "/callback"}, "redirect_uris", "'/callback' must be an absolute URL."),
    ({"redirect_uris": "https://user:pw@app.example.com/cb"}, "redirect_uris",
     "'https://user:pw@app.example.com/cb' must not contain user information."),
    ({"redirect_uris": "\n".join(f"https://a.example.com/{i}" for i in range(11))},
     "redirect_uris", "Add at most 10 redirect URIs."),
    ({"scopes": []}, "scopes", "Choose at least one scope your app may request."),
    ({"scopes": ["admin:all"]}, "scopes", "Unknown scope 'admin:all'."),
    ({"client_type": "trusted"}, "client_type", "Choose Confidential or Public."),
]


@pytest.mark.parametrize(("change", "field", "message"), FORM_ERRORS, ids=[
    "fails because the name is blank", "fails because the name is too long",
    "fails because the name has a control character",
    "fails because the description is too long",
    "fails because there is no redirect URI", "fails because http is not loopback",
    "fails because the URI has a fragment", "fails because the URI is relative",
    "fails because the URI has userinfo", "fails because there are 11 URIs",
    "fails because no scope is chosen", "fails because the scope is unknown",
    "fails because the app type is unknown"])
async def test_register_form_errors_are_shown_next_to_the_field(
        alice: User, change: dict[str, Any], field: str, message: str) -> None:
    before = listed_app_ids((await alice.page(APPS)).text)
    fields = app_form(name="Typed name", description="Typed description",
                      redirect_uris=f"{CALLBACK}\nhttps://second.example.com/cb")
    fields.update({"scope" if k == "scopes" else k: v for k, v in change.items()})
    response = await alice.post(f"{APPS}/new", fields)
    assert response.status_code == 400
    assert field_error(response.text, field) == message
    # What was typed stays in the form.
    if field != "name":
        assert input_value(response.text, "name") == "Typed name"
    if field != "redirect_uris":
        assert textarea(response.text, "redirect_uris") == (
            f"{CALLBACK}\nhttps://second.example.com/cb")
    if field != "description":
        assert textarea(response.text, "description") == "Typed description"
    assert listed_app_ids((await alice.page(APPS)).text) == before


def _html_with_png_header() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"<html><script>alert(document.cookie)</script></html>"


def _huge_dimensions() -> bytes:
    return image_bytes(size=(4000, 16), color=(0, 0, 0))


UPLOAD_ATTACKS = [
    (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(1)</script>'
     b"</svg>", "logo.png", "image/png",
     "SVG and other markup are not accepted; use PNG, JPEG or WebP."),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "logo.svg",
     "image/svg+xml", "SVG and other markup are not accepted; use PNG, JPEG or WebP."),
    (_html_with_png_header(), "logo.png", "image/png",
     "The file is not a PNG, JPEG or WebP image."),
    (b"", "empty.png", "image/png", "The file is empty. Choose a PNG, JPEG or WebP image."),
    (_huge_dimensions(), "wide.png", "image/png",
     "The image is 4000×16; at most 2048×2048 pixels are accepted."),
    (image_bytes(size=(8, 8)), "tiny.png", "image/png",
     "The image is 8×8; at least 16×16 pixels are needed."),
    (image_bytes(fmt="GIF"), "logo.gif", "image/gif",
     "The file is not a PNG, JPEG or WebP image."),
    (b"\x00" * (1024 * 1024 + 10), "big.png", "image/png",
     "The file is 1.0 MB; logos can be at most 1 MB. Choose a smaller image."),
]


@pytest.mark.parametrize(("data", "filename", "declared", "message"), UPLOAD_ATTACKS, ids=[
    "fails because SVG with script is declared PNG", "fails because it is SVG",
    "fails because it is HTML behind a PNG header", "fails because the file is empty",
    "fails because the image is 4000 px wide", "fails because the image is 8 px",
    "fails because GIF is not accepted", "fails because the file is over 1 MB"])
async def test_logo_upload_attacks_are_refused_with_a_clear_message(
        alice: User, data: bytes, filename: str, declared: str, message: str) -> None:
    before = listed_app_ids((await alice.page(APPS)).text)
    response = await alice.post(f"{APPS}/new", app_form(name="Logo test"),
                                files={"logo": (filename, data, declared)})
    assert response.status_code == 400
    assert field_error(response.text, "logo") == message
    assert input_value(response.text, "name") == "Logo test"
    assert listed_app_ids((await alice.page(APPS)).text) == before


async def test_a_20_mb_upload_is_refused_before_it_is_read(alice: User) -> None:
    response = await alice.post(f"{APPS}/new", app_form(),
                                files={"logo": ("huge.png", b"\x89PNG" + b"\0" * 20_000_000,
                                                "image/png")})
    assert response.status_code == 413
    assert "This file is too large" in response.text
    assert "Logos can be at most 1 MB" in response.text


async def test_every_post_needs_the_sessions_csrf_token(alice: User, mallory: User) -> None:
    app = await register(alice)
    before = listed_app_ids((await alice.page(APPS)).text)
    attempts = [
        (f"{APPS}/new", app_form()),
        (f"{APPS}/{app.client_id}", app_form(name="Hijacked")),
        (f"{APPS}/{app.client_id}/rotate-secret", {"overlap": "none"}),
        (f"{APPS}/{app.client_id}/delete", {}),
        (f"/settings/authorized-apps/{app.client_id}/revoke", {}),
    ]
    for path, data in attempts:
        for token in ("", mallory.csrf):  # none, or one from another session
            response = await alice.post(path, data, csrf=token)
            assert response.status_code == 403, path
            assert "This form has expired" in response.text
    assert listed_app_ids((await alice.page(APPS)).text) == before
    stub_page = await alice.page(f"{APPS}/{app.client_id}")
    assert input_value(stub_page.text, "name") == "Calendar Sync"


async def test_another_users_app_is_a_404_everywhere(alice: User, mallory: User,
                                                     registry: Any) -> None:
    app = await register(alice, name="Alice's app")
    base = f"{APPS}/{app.client_id}"
    for path in (base, f"{base}/delete", f"{base}/credentials"):
        response = await mallory.page(path)
        assert response.status_code == 404, path
        assert "Alice&#39;s app" not in response.text
    for path, data in ((base, app_form(name="Mallory's now")),
                       (f"{base}/rotate-secret", {"overlap": "none"}),
                       (f"{base}/delete", {})):
        response = await mallory.post(path, data)
        assert response.status_code == 404, path
    assert listed_app_ids((await mallory.page(APPS)).text) == []
    # Nothing changed: the name, the secret and the app itself.
    stub: registry_pb2_grpc.ClientRegistryAsyncStub = registry
    found = await stub.AuthenticateClient(registry_pb2.AuthenticateClientRequest(
        client_id=app.client_id, client_secret=app.client_secret))
    assert found.client.name == "Alice's app"


async def test_an_unknown_app_id_is_a_404(alice: User) -> None:
    for path in (f"{APPS}/otesse_ci_doesnotexist", f"{APPS}/%00", f"{APPS}/{'x' * 300}"):
        assert (await alice.page(path)).status_code == 404, path


async def test_edit_changes_the_app_and_keeps_what_was_typed_on_error(
        alice: User, registry: Any) -> None:
    app = await register(alice, logo=image_bytes(), name="Before")
    base = f"{APPS}/{app.client_id}"
    edit = await alice.page(base)
    assert input_value(edit.text, "name") == "Before"
    assert app.client_id in edit.text and "otesse_cs_" not in edit.text
    bad = await alice.post(base, app_form(name="After", redirect_uris="ftp://x/cb",
                                          scopes=["customers:write"]))
    assert bad.status_code == 400
    assert field_error(bad.text, "redirect_uris").endswith("must use https (http only for "
                                                           "loopback hosts).")
    assert input_value(bad.text, "name") == "After"
    assert 'value="customers:write" checked' in bad.text
    saved = await alice.post(base, app_form(
        name="After", description="New words\r\non two lines", redirect_uris="https://new.example.com/cb",
        scopes=["bookings:write", "customers:write"]),
        files={"logo": ("l.webp", image_bytes(fmt="WEBP"), "application/octet-stream")})
    assert saved.status_code == 303 and saved.headers["location"] == f"{base}?saved=1"
    page = await alice.page(saved.headers["location"])
    assert "Your changes were saved." in page.text
    stub: registry_pb2_grpc.ClientRegistryAsyncStub = registry
    client = (await stub.GetClient(registry_pb2.GetClientRequest(
        client_id=app.client_id))).client
    assert (client.name, client.description) == ("After", "New words\non two lines")
    assert list(client.redirect_uris) == ["https://new.example.com/cb"]
    assert list(client.allowed_scopes) == ["bookings:write", "customers:write"]
    assert client.logo_content_type == "image/webp"
    # The logo is served as what it is, not as it was declared.
    logo = await alice.http.get(f"/apps/{app.client_id}/logo")
    assert logo.headers["content-type"] == "image/webp"
    assert logo.headers["x-content-type-options"] == "nosniff"
    assert "max-age" in logo.headers["cache-control"] and logo.headers["etag"]
    removed = await alice.post(base, {**app_form(name="After"), "remove_logo": "1"})
    assert removed.status_code == 303
    client = (await stub.GetClient(registry_pb2.GetClientRequest(
        client_id=app.client_id))).client
    assert client.logo_sha256 == ""


async def test_a_bad_logo_on_edit_keeps_the_old_logo(alice: User, registry: Any) -> None:
    app = await register(alice, logo=image_bytes())
    response = await alice.post(f"{APPS}/{app.client_id}", app_form(name="Still"),
                                files={"logo": ("x.png", _html_with_png_header(), "image/png")})
    assert response.status_code == 400
    assert field_error(response.text, "logo") == "The file is not a PNG, JPEG or WebP image."
    stub: registry_pb2_grpc.ClientRegistryAsyncStub = registry
    client = (await stub.GetClient(registry_pb2.GetClientRequest(
        client_id=app.client_id))).client
    assert client.logo_content_type == "image/png" and client.name == "Calendar Sync"


@pytest.mark.parametrize(("overlap", "old_still_works"), [("default", True), ("none", False)],
                         ids=["the old secret keeps working for the overlap",
                              "the old secret stops at once"])
async def test_rotate_shows_the_new_secret_once(alice: User, registry: Any, overlap: str,
                                                old_still_works: bool) -> None:
    app = await register(alice)
    response = await alice.post(f"{APPS}/{app.client_id}/rotate-secret", {"overlap": overlap})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location == f"{APPS}/{app.client_id}/credentials"
    page = await alice.page(location)
    new_secret = shown_secret(page.text)
    assert new_secret.startswith("otesse_cs_") and new_secret != app.client_secret
    assert "A new secret for" in page.text
    assert ("keeps working until" in page.text) is old_still_works
    assert new_secret not in (await alice.page(location)).text
    stub: registry_pb2_grpc.ClientRegistryAsyncStub = registry
    await stub.AuthenticateClient(registry_pb2.AuthenticateClientRequest(
        client_id=app.client_id, client_secret=new_secret))
    try:
        await stub.AuthenticateClient(registry_pb2.AuthenticateClientRequest(
            client_id=app.client_id, client_secret=app.client_secret))
        worked = True
    except Exception:  # noqa: BLE001 - UNAUTHENTICATED
        worked = False
    assert worked is old_still_works


async def test_rotate_needs_a_choice(alice: User) -> None:
    app = await register(alice)
    response = await alice.post(f"{APPS}/{app.client_id}/rotate-secret", {"overlap": "1y"})
    assert response.status_code == 400


async def test_delete_asks_first_then_revokes_every_token_and_deletes(
        alice: User, mallory: User, pages: Pages, registry: Any) -> None:
    app = await register(alice)
    tokens = [await grant_tokens(user, pages, app) for user in (alice, mallory)]
    confirm = await alice.page(f"{APPS}/{app.client_id}/delete")
    assert confirm.status_code == 200 and "Delete Calendar Sync?" in confirm.text
    assert app.client_id in listed_app_ids((await alice.page(APPS)).text)
    response = await alice.post(f"{APPS}/{app.client_id}/delete")
    assert response.status_code == 303 and response.headers["location"] == f"{APPS}?deleted=1"
    started = time.monotonic()
    for body in tokens:
        verdict = await pages.token.grpc.ValidateToken(
            token_pb2.ValidateTokenRequest(token=body["access_token"]))
        assert not verdict.active and verdict.reason == token_pb2.VALIDATION_REASON_REVOKED
    assert time.monotonic() - started < 1.0
    refreshed = await pages.token.http.post("/oauth/token", json={
        "grant_type": "refresh_token", "refresh_token": tokens[0]["refresh_token"],
        "client_id": app.client_id, "client_secret": app.client_secret})
    assert refreshed.status_code in (400, 401)
    listing = await alice.page(f"{APPS}?deleted=1")
    assert app.client_id not in listed_app_ids(listing.text)
    assert "every token it held was revoked" in listing.text
    stub: registry_pb2_grpc.ClientRegistryAsyncStub = registry
    with pytest.raises(Exception, match="NOT_FOUND"):
        await stub.GetClient(registry_pb2.GetClientRequest(client_id=app.client_id))


async def test_newest_apps_are_listed_first_with_their_logo(alice: User) -> None:
    first = await register(alice, name="First", logo=image_bytes())
    second = await register(alice, name="Second")
    listing = await alice.page(APPS)
    assert listed_app_ids(listing.text) == [second.client_id, first.client_id]
    assert f'src="/apps/{first.client_id}/logo?v=' in listing.text
