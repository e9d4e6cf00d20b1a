"""The webhook signature scheme (no Django: a receiver may copy this module as it is).

Each delivery is a POST of a JSON body with these headers:

- ``X-Tessera-Event``: the event type, e.g. ``job.succeeded``;
- ``X-Tessera-Delivery``: the delivery's id (the same on every retry: deduplicate on it);
- ``X-Tessera-Timestamp``: seconds since the Unix epoch when this attempt was signed;
- ``X-Tessera-Signature``: ``v1=<hex>``, where ``<hex>`` is HMAC-SHA256, keyed with the webhook's
  secret (its UTF-8 bytes, ``whsec_…`` included), over ``"<timestamp>.<body>"`` (the timestamp as
  sent, a full stop, the raw body bytes).

To verify: recompute the HMAC over the raw body as received (before any JSON parsing), compare in
constant time with each ``v1=`` value (several may be sent, comma-separated, while secrets change),
and refuse a timestamp older than a few minutes (``tolerance``) to stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The signature header is missing, malformed, stale or does not match."""


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Tessera-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Raise ``SignatureError`` unless ``signature_header`` signs ``body`` at a fresh ``timestamp``."""
    if not timestamp or not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise SignatureError("X-Tessera-Timestamp must be whole seconds since the epoch.")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        raise SignatureError("X-Tessera-Timestamp is outside the tolerance (a replay?).")
    expected = sign(secret, timestamp, body)
    offered = [p.strip() for p in (signature_header or "").split(",") if p.strip().startswith(f"{SCHEME}=")]
    if not offered:
        raise SignatureError("X-Tessera-Signature has no v1= value.")
    want = expected.encode()
    if not any(hmac.compare_digest(want, p.encode("utf-8", "replace")) for p in offered):
        raise SignatureError("X-Tessera-Signature does not match the body.")
