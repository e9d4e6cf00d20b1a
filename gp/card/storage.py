"""Atomic, encrypted persistence of the software Secure Element's state.

The state is the card's non-volatile memory; a real card guarantees that an interrupted write
leaves either the old or the new content (GP CS v2.3.1 §6.2 "atomicity" of OPEN operations), so:

1. Serialise the state (JSON) and seal it with AES-256-GCM under the state key; the file header
   is the associated data.  Keys and everything else are therefore encrypted at rest.
2. Write the sealed bytes to a temporary file in the same directory, flush and ``fsync`` it.
3. ``os.replace`` it over the card file (atomic on POSIX), then ``fsync`` the directory.

A crash before step 3 leaves the previous file intact; the temporary file is removed on failure.
The state key is supplied by the caller or derived (HKDF-SHA256) from ``<path>.secret``: 32 random
bytes created on first use with mode 0600.
"""

from __future__ import annotations

import contextlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gp.errors import GPError

__all__ = ["StorageError", "load", "resolve_state_key", "save"]

MAGIC = b"TESSERA-SOFTCARD/1\n"
_NONCE = 12


class StorageError(GPError):
    """The card file cannot be read, decrypted or written."""


def _secret_path(path: str) -> str:
    return path + ".secret"


def resolve_state_key(path: str, state_key: bytes | None) -> bytes:
    """The AES-256 key protecting ``path``: HKDF of the caller's key or of the local secret file."""
    if state_key is not None:
        if len(state_key) < 16:
            raise StorageError("state key must be at least 16 bytes")
        material = bytes(state_key)
    else:
        secret = _secret_path(path)
        try:
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
                f.flush()
                os.fsync(f.fileno())
        with open(secret, "rb") as f:
            material = f.read()
        if len(material) < 16:
            raise StorageError(f"secret file {secret} is truncated")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tessera softcard state v1").derive(
        material
    )


def _commit(tmp: str, path: str) -> None:
    """Step 3: the atomic switch (a separate function so tests can simulate a crash before it)."""
    os.replace(tmp, path)


def save(path: str, payload: bytes, key: bytes) -> None:
    nonce = os.urandom(_NONCE)
    sealed = MAGIC + nonce + AESGCM(key).encrypt(nonce, payload, MAGIC)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(sealed)
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise StorageError(f"cannot write card state: {e.strerror or e}") from e
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load(path: str, key: bytes) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise StorageError(f"cannot read card state {path}: {e.strerror or e}") from e
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + _NONCE + 16:
        raise StorageError(f"{path} is not a Tessera soft card file")
    nonce = raw[len(MAGIC) : len(MAGIC) + _NONCE]
    try:
        return AESGCM(key).decrypt(nonce, raw[len(MAGIC) + _NONCE :], MAGIC)
    except InvalidTag:
        raise StorageError(f"{path}: wrong state key or corrupted file") from None
