"""What the identity tests share: users' passwords, clouds.yaml files, logging in, an API
with a chosen `--auth`, and every row the store holds as text (to search for secrets)."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import psycopg

from adapters.eventstore import parse_store_url
from api.serving import ApiSettings, build_app
from tests.api.conftest import Api, serve_in_thread

PASSWORDS = {"alice": "alice-pass-1234", "bob": "bob-pass-5678", "root": "root-pass-9012"}
PROJECTS = {"alice": "web", "bob": "other", "root": "admin"}


def free_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def start_identity_api(store: str, tmp: Path, auth: str, scheme: str = "http",
                       **settings: Any) -> Api:
    sock = free_port()
    port = sock.getsockname()[1]
    app = build_app(ApiSettings(listen=f"127.0.0.1:{port}", store_url=store,
                                data_dir=tmp / "data", auth=auth, **settings))
    config: dict[str, Any] = {}
    if scheme == "https":
        config = {"ssl_certfile": str(settings["tls_cert"]),
                  "ssl_keyfile": str(settings["tls_key"])}
    server, thread = serve_in_thread(app, sock, **config)
    return Api(f"{scheme}://127.0.0.1:{port}", tmp, server, thread)


def stop_identity_api(api: Api) -> None:
    api.stop()
    state = api.server.config.app.state
    close = getattr(state.identity, "close", None)
    if close is not None:
        close()
    state.contexts.close()


def password_cloud(cloud: str, auth_url: str, user: str, password: str, project: str,
                   extra: tuple[str, ...] = ()) -> list[str]:
    """A stock clouds.yaml entry: auth_url, user, password, project, Default domains."""
    return [f"  {cloud}:", *extra, "    auth:", f"      auth_url: {auth_url}",
            f"      username: {user}", f"      password: {password}",
            f"      project_name: {project}",
            "      user_domain_name: Default", "      project_domain_name: Default"]


def standalone_clouds(url: str, credential: dict[str, str],
                      extra: tuple[str, ...] = ()) -> str:
    """A stock clouds.yaml per user, one for alice's application credential, one wrong."""
    auth_url = f"{url}/identity/v3"
    lines = ["clouds:"]
    for name, password in PASSWORDS.items():
        lines += password_cloud(name, auth_url, name, password, PROJECTS[name], extra)
    lines += password_cloud("wrong", auth_url, "alice", "not-alices-password", "web", extra)
    lines += ["  alice-credential:", *extra, "    auth_type: v3applicationcredential",
              "    auth:", f"      auth_url: {auth_url}",
              f"      application_credential_id: {credential['id']}",
              f"      application_credential_secret: {credential['secret']}"]
    return "\n".join(lines) + "\n"


def login(url: str, name: str, project: str, password: str | None = None,
          verify: Any = True) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": name, "domain": {"name": "Default"},
        "password": password or PASSWORDS[name]}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    answer = httpx.post(f"{url}/identity/v3/auth/tokens", json=body, verify=verify)
    assert answer.status_code == 201, answer.text
    return answer.headers["X-Subject-Token"]


def all_text_of_the_store(h: Any) -> str:
    """Every row of every table of the store (events, snapshots, projections, tracking)."""
    store = parse_store_url(h.store)
    rows: list[tuple[Any, ...]] = []
    if store.backend == "sqlite":
        with sqlite3.connect(str(store.sqlite_path)) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                rows += conn.execute(f'SELECT * FROM "{table}"').fetchall()
    else:
        with psycopg.connect(store.psycopg_conninfo()) as conn:
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE "
                "table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
            for schema, table in tables:
                rows += conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
    return "\n".join(" ".join(_text(value) for value in row) for row in rows)


def _text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shelf test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def recorded(h: Any, topic_end: str) -> list[dict[str, Any]]:
    """The stored state of every event whose topic ends with `topic_end`."""
    import json

    from adapters.eventstore import open_application

    app = open_application(parse_store_url(h.store))
    try:
        rows = app.recorder.select_notifications(start=1, limit=100_000)
        return [json.loads(bytes(row.state)) for row in rows if row.topic.endswith(topic_end)]
    finally:
        app.close()


def boot_shelve_unshelve(api: Api, admin: str, user: str, unshelver: str | None = None) -> str:
    """The real client: a flavor (as admin), a server booted, shelved and unshelved."""
    api.openstack(admin, "flavor", "create", "--vcpus", "1", "--ram", "256", "--disk", "1",
                  "m1.tiny")
    created = api.openstack_json(user, "server", "create", "--flavor", "m1.tiny",
                                 "--image", "cirros", "--wait", "web1")
    api.openstack(user, "server", "shelve", "--wait", "web1")
    api.openstack(unshelver or user, "server", "unshelve", "--wait", "web1")
    server_id: str = created["id"]
    return server_id
