"""TLS: `shelf api --tls-cert/--tls-key` serves HTTPS that the real client trusts with
--os-cacert; without a certificate, plain HTTP only on loopback unless --insecure-http.
(Nothing listens beyond loopback here: the refusal happens before listening.)"""

from __future__ import annotations

import io
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest

from api.serving import ApiSettings, build_app
from domain.errors import UsageError
from tests.api.identity_support import (
    PASSWORDS,
    login,
    make_certificate,
    standalone_clouds,
    start_identity_api,
    stop_identity_api,
)


def test_plain_http_beyond_loopback_is_refused(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(UsageError, match="refusing plain HTTP on"):
        build_app(ApiSettings(listen="0.0.0.0:8774", store_url=store, data_dir=tmp_path))
    with pytest.raises(UsageError, match="go together"):
        build_app(ApiSettings(listen="0.0.0.0:8774", store_url=store, data_dir=tmp_path,
                              tls_cert=tmp_path / "cert.pem"))
    app = build_app(ApiSettings(listen="0.0.0.0:8774", store_url=store, data_dir=tmp_path,
                                insecure_http=True))  # built, never served
    app.state.identity.close()
    app.state.contexts.close()


def test_https_with_the_real_client(harness_factory: Any, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness_factory(start=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORDS["alice"] + "\n"))
    h.ok("user", "create", "alice", "--project", "web", "--role", "member",
         "--password-stdin")
    ca, cert, key = make_certificate(tmp_path)
    api = start_identity_api(h.store, tmp_path, "standalone", scheme="https",
                             tls_cert=cert, tls_key=key)
    try:
        assert api.url.startswith("https://")
        token = login(api.url, "alice", "web", verify=ssl.create_default_context(cafile=ca))
        assert token
        credential = {"id": "unused", "secret": "unused"}
        (tmp_path / "clouds.yaml").write_text(standalone_clouds(api.url, credential))
        listed = api.openstack("alice", "--os-cacert", str(ca), "image", "list")
        assert listed.returncode == 0
        untrusted = api.openstack("alice", "image", "list", check=False)
        assert untrusted.returncode != 0 and "SSL" in untrusted.stderr + untrusted.stdout
    finally:
        stop_identity_api(api)
