"""gRPC TLS is a configuration switch: with certificates set, only TLS clients get through,
and with a CA set on the server, only clients holding a certificate it signed (mTLS)."""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otesse.auth.v1 import registry_pb2 as pb
from otesse.auth.v1 import registry_pb2_grpc
from services.common.grpc_client import create_channel
from services.common.settings import Env, GrpcTlsSettings, StoreSettings
from services.registry.app import create_server
from services.registry.settings import RegistrySettings

SERVICES = ("otesse.auth.v1.ClientRegistry",)


def _write_cert(directory: Path, name: str, *, issuer_key: ec.EllipticCurvePrivateKey | None,
                issuer_name: x509.Name | None, ca: bool) -> tuple[ec.EllipticCurvePrivateKey,
                                                              x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_name or subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return key, subject


def make_pki(directory: Path) -> None:
    ca_key, ca_name = _write_cert(directory, "ca", issuer_key=None, issuer_name=None, ca=True)
    for name in ("server", "client"):
        _write_cert(directory, name, issuer_key=ca_key, issuer_name=ca_name, ca=False)


async def list_ok(channel: grpc.aio.Channel) -> bool:
    stub = registry_pb2_grpc.ClientRegistryStub(channel)
    try:
        await stub.ListClients(pb.ListClientsRequest(owner_user_id="tls"), timeout=3)
        return True
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return False
    finally:
        await channel.close()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
async def test_tls_switch(tmp_path: Path, store_settings: StoreSettings, pool: asyncpg.Pool,
                          mutual: bool) -> None:
    make_pki(tmp_path)
    server_tls = GrpcTlsSettings(cert_file=str(tmp_path / "server.pem"),
                                 key_file=str(tmp_path / "server.key"),
                                 ca_file=str(tmp_path / "ca.pem") if mutual else None)
    settings = replace(RegistrySettings.from_env(Env({})), stores=store_settings,
                       tls=server_tls, grpc_host="localhost")
    server = create_server(settings, pool, port=0)
    await server.start()
    target = f"localhost:{server.port}"
    try:
        client_tls = GrpcTlsSettings(
            cert_file=str(tmp_path / "client.pem") if mutual else None,
            key_file=str(tmp_path / "client.key") if mutual else None,
            ca_file=str(tmp_path / "ca.pem"))
        assert await list_ok(create_channel(target, services=SERVICES, tls=client_tls))
        # A plaintext client never gets an answer from a TLS server.
        assert not await list_ok(create_channel(target, services=SERVICES))
        if mutual:
            # Without a client certificate the handshake is refused.
            no_cert = GrpcTlsSettings(cert_file=None, key_file=None,
                                      ca_file=str(tmp_path / "ca.pem"))
            assert not await list_ok(create_channel(target, services=SERVICES, tls=no_cert))
    finally:
        await server.stop(grace=0.5)
