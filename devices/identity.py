"""Device identities for the agent endpoint, cached so an idle poll touches no database.

The cache maps a key id (hex SHA-256 of the device's public key, see ``agent.httpsig.key_id``)
to the device id, its public key and its status. Entries are dropped when the device's key or
status changes (``forget_identity``), and expire anyway after ``TTL`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from django.core.cache import cache

from devices.models import Device

TTL = 3600
_MISSING = "-"


@dataclass(frozen=True)
class Identity:
    device_id: str
    public_key_pem: str
    status: str

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return _load(self.public_key_pem)


@lru_cache(maxsize=4096)
def _load(pem: str) -> ec.EllipticCurvePublicKey:
    key = load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an EC public key")
    return key


def _cache_key(key_id: str) -> str:
    return f"tessera:agent:identity:{key_id}"


def resolve_identity(key_id: str) -> Identity | None:
    cached = cache.get(_cache_key(key_id))
    if cached == _MISSING:
        return None
    if cached is not None:
        return Identity(*cached)
    row = (
        Device.objects.filter(identity_key_id=key_id)
        .values_list("pk", "identity_public_key", "status")
        .first()
    )
    if row is None:
        cache.set(_cache_key(key_id), _MISSING, 60)  # unknown keys are answered from the cache too
        return None
    identity = Identity(str(row[0]), row[1], row[2])
    cache.set(_cache_key(key_id), (identity.device_id, identity.public_key_pem, identity.status), TTL)
    return identity


def forget_identity(key_id: str | None) -> None:
    if key_id:
        cache.delete(_cache_key(key_id))
