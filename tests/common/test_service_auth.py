"""Service identities on internal gRPC (DESIGN §5): the credential format as attacks on it, the
policy table closed by default, streaming calls guarded too, and the mTLS identity path with
real certificates."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc, token_pb2
from services.common import service_auth
from services.common.grpc_client import create_channel
from services.common.grpc_server import create_server
from services.common.service_auth import CredentialRejected, mint, verify
from services.common.settings import (
    ConfigError,
    Env,
    GrpcTlsSettings,
    ServiceCredentialSettings,
    StoreSettings,
)
from services.registry.app import create_server as create_registry_server
from services.registry.servicer import ACCESS as REGISTRY_ACCESS
from services.registry.settings import RegistrySettings
from services.token.servicer import ACCESS as TOKEN_ACCESS
from tests.callers import DEV_KEY, as_service

KEY = b"s" * 32
NOW = 1_900_000_000.0


def _edit(credential: str, **claims: Any) -> str:
    version, payload, mac = credential.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=="))
    decoded.update(claims)
    raw = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{version}.{raw}.{mac}"


def _resigned(**claims: Any) -> str:
    """A credential with arbitrary claims and a correct mac: what a key holder could mint."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    mac = service_auth._mac(KEY, f"v1.{payload}")
    return f"v1.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


GOOD = mint(KEY, caller="authorize", audience="token", now=NOW)
REJECTED = [
    ("fails because the payload was edited", _edit(GOOD, sub="cli"), "bad signature"),
    ("fails because the expiry was pushed back", _edit(GOOD, exp=int(NOW) + 50),
     "bad signature"),
    ("fails because the mac was cut", GOOD[:-4], "bad signature"),
    ("fails because the mac is another key's",
     mint(b"o" * 32, caller="authorize", audience="token", now=NOW), "bad signature"),
    ("fails because the version is unknown", "v2" + GOOD[2:], "malformed"),
    ("fails because a part is missing", GOOD.rsplit(".", 1)[0], "malformed"),
    ("fails because the mac is not base64", GOOD.rsplit(".", 1)[0] + ".@@@", "malformed"),
    ("fails because it is not ASCII", "v1.é.é", "malformed"),
    ("fails because it is too long", "v1." + "A" * 2000 + ".AAAA", "too long"),
    ("fails because the audience is another service",
     mint(KEY, caller="authorize", audience="registry", now=NOW), "wrong audience"),
    ("fails because it expired", mint(KEY, caller="authorize", audience="token",
                                      now=NOW - 120), "expired"),
    ("fails because it was minted to live a day",
     mint(KEY, caller="authorize", audience="token", now=NOW, lifetime=86400),
     "lifetime too long"),
    ("fails because the caller is not a service name",
     _resigned(sub="Authorize Service", aud="token", exp=int(NOW) + 60), "malformed"),
    ("fails because exp is not a number",
     _resigned(sub="authorize", aud="token", exp="soon"), "malformed"),
    ("fails because exp is a boolean", _resigned(sub="authorize", aud="token", exp=True),
     "malformed"),
    ("fails because the payload is not JSON", "v1." + base64.urlsafe_b64encode(b"{").decode()
     .rstrip("=") + "." + base64.urlsafe_b64encode(service_auth._mac(
         KEY, "v1." + base64.urlsafe_b64encode(b"{").decode().rstrip("="))).decode()
     .rstrip("="), "malformed"),
]


def test_a_minted_credential_names_its_caller() -> None:
    assert verify(KEY, GOOD, audience="token", now=NOW) == "authorize"
    # Within the allowed clock skew either way.
    assert verify(KEY, GOOD, audience="token", now=NOW + 60 + 29) == "authorize"


@pytest.mark.parametrize(("credential", "reason"), [case[1:] for case in REJECTED],
                         ids=[case[0] for case in REJECTED])
def test_a_bad_credential_is_rejected(credential: str, reason: str) -> None:
    with pytest.raises(CredentialRejected, match=reason):
        verify(KEY, credential, audience="token", now=NOW)


@pytest.mark.parametrize("environ", [
    {"OTESSE_SERVICE_CREDENTIAL_KEY": "not base64!"},
    {"OTESSE_SERVICE_CREDENTIAL_KEY": base64.b64encode(b"short").decode()},
], ids=["fails because it is not base64", "fails because it is shorter than 32 bytes"])
def test_a_malformed_key_stops_start_up_naming_it(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="OTESSE_SERVICE_CREDENTIAL_KEY") as caught:
        ServiceCredentialSettings.from_env(Env(environ))
    assert "\n" not in str(caught.value) and environ["OTESSE_SERVICE_CREDENTIAL_KEY"] not in \
        str(caught.value)


def test_with_no_environment_the_public_development_key_is_used() -> None:
    settings = ServiceCredentialSettings.from_env(Env({}))
    assert settings.is_default and len(settings.key_bytes) == 32
    assert "development" not in repr(settings)
    real = ServiceCredentialSettings.from_env(Env({
        "OTESSE_SERVICE_CREDENTIAL_KEY": base64.b64encode(b"r" * 32).decode()}))
    assert not real.is_default


@pytest.mark.parametrize(("service", "policy"), [
    (token_pb2.DESCRIPTOR.services_by_name["TokenService"], TOKEN_ACCESS),
    (pb.DESCRIPTOR.services_by_name["ClientRegistry"], REGISTRY_ACCESS),
], ids=["TokenService", "ClientRegistry"])
def test_every_method_has_a_policy(service: Any, policy: service_auth.Policy) -> None:
    # A new RPC is refused until someone decides who may call it; this says where to decide.
    assert {f"/{service.full_name}/{method.name}" for method in service.methods} == set(policy)


# --- A real server: closed by default, streaming calls guarded ------------------------------

_ECHO = "/otesse.test.Echo/"


async def _echo_unary(request: bytes, context: Any) -> bytes:
    return request


async def _echo_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(3):
        yield request


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    handler = grpc.method_handlers_generic_handler("otesse.test.Echo", {
        "Open": grpc.unary_unary_rpc_method_handler(_echo_unary),
        "Admin": grpc.unary_unary_rpc_method_handler(_echo_unary),
        "Unlisted": grpc.unary_unary_rpc_method_handler(_echo_unary),
        "Watch": grpc.unary_stream_rpc_method_handler(_echo_stream),
    })
    policy = {f"{_ECHO}Open": service_auth.ANY_CALLER, f"{_ECHO}Admin": frozenset({"authorize"}),
              f"{_ECHO}Watch": frozenset({"authorize"})}
    server = create_server(
        service="echo", add_servicers=lambda s: s.add_generic_rpc_handlers([handler]) or [],
        host="127.0.0.1", port=0,
        interceptors=[service_auth.AccessPolicyInterceptor(service="echo", policy=policy,
                                                           key=DEV_KEY)])
    await server.start()
    yield server.port
    await server.stop(grace=0.5)


async def _status(call: Any) -> grpc.StatusCode:
    try:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("method", "caller", "expected"), [
    ("Open", None, grpc.StatusCode.OK),
    ("Admin", None, grpc.StatusCode.UNAUTHENTICATED),
    ("Admin", "bookings", grpc.StatusCode.PERMISSION_DENIED),
    ("Admin", "authorize", grpc.StatusCode.OK),
    ("Unlisted", "authorize", grpc.StatusCode.PERMISSION_DENIED),
    ("Watch", None, grpc.StatusCode.UNAUTHENTICATED),
    ("Watch", "bookings", grpc.StatusCode.PERMISSION_DENIED),
    ("Watch", "authorize", grpc.StatusCode.OK),
], ids=["open to anyone", "fails because no credential", "fails because not allowed",
        "allowed caller", "fails because a method missing from the policy is closed",
        "stream: fails because no credential", "stream: fails because not allowed",
        "stream: allowed caller"])
async def test_the_interceptor_enforces_the_table(echo_server: int, method: str,
                                                  caller: str | None,
                                                  expected: grpc.StatusCode) -> None:
    interceptors = as_service(caller, "echo") if caller else []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_server}",
                                         interceptors=interceptors) as channel:
        call: Any
        if method == "Watch":
            call = channel.unary_stream(f"{_ECHO}Watch")
        else:
            call = channel.unary_unary(f"{_ECHO}{method}")
        assert await _status(call(b"x")) == expected


# --- mTLS: the client certificate names the caller -------------------------------------------


def _cert(directory: Path, name: str, *, names: list[str], issuer: tuple[Any, x509.Name] | None,
          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[1] if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                              critical=True))
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    cert = builder.sign(issuer[0] if issuer else key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return key, subject


def _pki(directory: Path) -> None:
    ca = _cert(directory, "ca", names=["Otesse test CA"], issuer=None)
    _cert(directory, "server", names=["localhost"], issuer=ca)
    _cert(directory, "authorize", names=["authorize.otesse-auth.svc.cluster.local"], issuer=ca)
    _cert(directory, "bookings", names=["bookings.otesse-apps.svc.cluster.local"], issuer=ca)


def _client_tls(directory: Path, name: str | None) -> GrpcTlsSettings:
    return GrpcTlsSettings(cert_file=str(directory / f"{name}.pem") if name else None,
                           key_file=str(directory / f"{name}.key") if name else None,
                           ca_file=str(directory / "ca.pem"))


MTLS_CASES = [
    ("a certificate naming authorize may", "authorize", None, grpc.StatusCode.OK),
    ("fails because a resource server's certificate may not", "bookings", None,
     grpc.StatusCode.PERMISSION_DENIED),
    ("fails because a forged credential is never ignored", "bookings",
     lambda: mint(b"f" * 32, caller="authorize", audience="registry"),
     grpc.StatusCode.UNAUTHENTICATED),
    ("a valid credential proves a name beside the certificate", "bookings",
     lambda: mint(DEV_KEY, caller="cli", audience="registry"), grpc.StatusCode.OK),
]


@pytest.mark.parametrize(("certificate", "credential", "expected"),
                         [case[1:] for case in MTLS_CASES], ids=[case[0] for case in MTLS_CASES])
async def test_with_mtls_the_certificate_names_the_caller(
        tmp_path: Path, store_settings: StoreSettings, pool: asyncpg.Pool, certificate: str,
        credential: Any, expected: grpc.StatusCode) -> None:
    _pki(tmp_path)
    server_tls = GrpcTlsSettings(cert_file=str(tmp_path / "server.pem"),
                                 key_file=str(tmp_path / "server.key"),
                                 ca_file=str(tmp_path / "ca.pem"))
    settings = replace(RegistrySettings.from_env(Env({})), stores=store_settings,
                       tls=server_tls, grpc_host="localhost")
    server = create_registry_server(settings, pool, port=0)
    await server.start()
    channel = create_channel(f"localhost:{server.port}",
                             services=("otesse.auth.v1.ClientRegistry",),
                             tls=_client_tls(tmp_path, certificate))
    try:
        stub = registry_pb2_grpc.ClientRegistryStub(channel)
        metadata = ((service_auth.METADATA_KEY, credential()),) if credential else ()
        status = await _status(stub.RegisterClient(pb.RegisterClientRequest(
            name="mTLS", redirect_uris=["https://mtls.example/cb"],
            allowed_scopes=["bookings:read"], owner_user_id="owner-mtls"),
            metadata=metadata, timeout=5))
        assert status == expected
        # Reading stays open to any certificate the CA signed.
        assert await _status(stub.ListClients(pb.ListClientsRequest(
            owner_user_id="owner-mtls"), timeout=5)) == grpc.StatusCode.OK
    finally:
        await channel.close()
        await server.stop(grace=0.5)


async def test_with_one_way_tls_the_credential_names_the_caller(
        tmp_path: Path, store_settings: StoreSettings, pool: asyncpg.Pool) -> None:
    _pki(tmp_path)
    server_tls = GrpcTlsSettings(cert_file=str(tmp_path / "server.pem"),
                                 key_file=str(tmp_path / "server.key"), ca_file=None)
    settings = replace(RegistrySettings.from_env(Env({})), stores=store_settings,
                       tls=server_tls, grpc_host="localhost")
    server = create_registry_server(settings, pool, port=0)
    await server.start()
    target = f"localhost:{server.port}"
    tls = _client_tls(tmp_path, None)
    anonymous = create_channel(target, services=("otesse.auth.v1.ClientRegistry",), tls=tls)
    cli = create_channel(target, services=("otesse.auth.v1.ClientRegistry",), tls=tls,
                         interceptors=as_service("cli", "registry"))
    request = pb.RegisterClientRequest(name="TLS", redirect_uris=["https://tls.example/cb"],
                                       allowed_scopes=["bookings:read"], owner_user_id="o-tls")
    try:
        assert await _status(registry_pb2_grpc.ClientRegistryStub(anonymous).RegisterClient(
            request, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        assert await _status(registry_pb2_grpc.ClientRegistryStub(cli).RegisterClient(
            request, timeout=5)) == grpc.StatusCode.OK
    finally:
        await anonymous.close()
        await cli.close()
        await server.stop(grace=0.5)


@pytest.mark.parametrize(("context", "names"), [
    ({"transport_security_type": [b"ssl"],
      "x509_subject_alternative_name": [b"authorize.otesse-auth.svc", b"authorize"],
      "x509_common_name": [b"authorize"]}, {"authorize"}),
    ({"transport_security_type": [b"ssl"], "x509_common_name": [b"Token Service"]}, set()),
    ({"transport_security_type": [b"insecure"], "x509_common_name": [b"authorize"]}, set()),
    ({}, set()),
], ids=["SAN and CN, first label", "fails because a name with a space names no service",
        "fails because the transport is not TLS", "fails because there is no certificate"])
def test_certificate_names(context: dict[str, list[bytes]], names: set[str]) -> None:
    assert service_auth.certificate_names(context) == names
