"""Fixtures of the provider tooling's tests: a key store in a temporary directory and a fake
Tessera API over HTTP (``tests/sdk/fake_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sdk.client import ApiClient, ServerConfig
from sdk.store import PASSPHRASE_ENV, KeyStore
from tests.sdk.fake_server import ORG, TOKEN, FakeTessera

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {PASSPHRASE_ENV: PASSPHRASE}
    for k in ("TESSERA_URL", "TESSERA_ORG", "TESSERA_TOKEN", "TESSERA_PROVIDER_STORE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture
def store(tmp_path: Path, env: dict[str, str]) -> KeyStore:
    return KeyStore.create(tmp_path / "store", passphrase=PASSPHRASE)


@pytest.fixture
def fake() -> Iterator[tuple[FakeTessera, str]]:
    server = FakeTessera()
    http, url = server.serve()
    try:
        yield server, url
    finally:
        http.shutdown()
        http.server_close()


@pytest.fixture
def client(fake: tuple[FakeTessera, str]) -> Iterator[ApiClient]:
    with ApiClient(ServerConfig(url=fake[1], org=ORG, token=TOKEN)) as c:
        yield c
