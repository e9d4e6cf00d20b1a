"""Agent fixtures: a software SE on disk, a device identity, a configuration, a journal."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.backends.soft import SoftBackend
from agent.config import AgentConfig, PollSettings
from agent.journal import Journal
from tests.gp.cardkit import new_card


@pytest.fixture
def identity() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key_file(tmp_path: Path, identity: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "identity.pem"
    pem = identity.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return path


@pytest.fixture
def card_path(tmp_path: Path) -> str:
    path = str(tmp_path / "card.se")
    new_card(path, serial=bytes.fromhex("C0FFEE01"))
    return path


@pytest.fixture
def soft_backend(card_path: str) -> Iterator[SoftBackend]:
    backend = SoftBackend(card_path)
    yield backend
    backend.close()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


@pytest.fixture
def config(tmp_path: Path, key_file: Path, card_path: str) -> AgentConfig:
    return AgentConfig(
        server_url="http://127.0.0.1:9",
        serial="GW-TEST-1",
        identity_key=key_file,
        backend=f"soft:{card_path}",
        journal=tmp_path / "journal.sqlite",
        poll=PollSettings(min_s=1.0, max_s=600.0, backoff_base_s=2.0, backoff_cap_s=60.0),
    )
