"""``POST /agent/v1/exchange``: the one endpoint gateways talk to (DESIGN §8).

Tiny and strict on purpose: size limit, RFC 9421 signature with the device's key, replay and
staleness checks, then one exchange. Refusals are JSON with a reason code (docs/agent-protocol.md).
The view is async so that holding an answer for work that is about to appear costs no thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from agent import httpsig
from agent.protocol import MAX_BODY_BYTES, ExchangeRequest, ExchangeResponse, ProtocolError, decode
from devices.identity import resolve_identity
from jobs import wake
from jobs.engine import has_work_key
from jobs.exchange import collect_work, exchange

log = logging.getLogger("tessera.agent")
NONCE_TTL = 600


def _refuse(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _authenticate(request: HttpRequest, body: bytes) -> str:
    """Verify the signature; return the device id or raise SignatureError."""
    found: dict[str, Any] = {}

    def resolve(key_id: str) -> Any:
        identity = resolve_identity(key_id)
        if identity is None:
            return None
        if identity.status != "active":
            raise httpsig.SignatureError("device_suspended", "this device is suspended")
        found["device"] = identity.device_id
        return identity.public_key

    params = httpsig.verify_request(
        method=request.method or "POST",
        path=request.path,
        headers=request.headers,
        body=body,
        resolve_key=resolve,
        now=time.time(),
        max_skew=settings.TESSERA_AGENT_MAX_SKEW_SECONDS,
    )
    if not cache.add(f"tessera:agent:nonce:{params.keyid}:{params.nonce}", 1, NONCE_TTL):
        raise httpsig.SignatureError("replayed", "this request was already received")
    return found["device"]


def _handle(
    request: HttpRequest, body: bytes
) -> tuple[JsonResponse | None, str, ExchangeResponse | None, float, bool]:
    try:
        device_id = _authenticate(request, body)
    except httpsig.SignatureError as exc:
        log.info("agent refused reason=%s", exc.code)
        return _refuse(401, exc.code, str(exc)), "", None, 0.0, False
    try:
        message = ExchangeRequest.from_json(decode(body))
    except ProtocolError as exc:
        return _refuse(400, "malformed_request", str(exc)), device_id, None, 0.0, False
    response, hold = exchange(device_id, message)
    return None, device_id, response, hold, bool(message.wait)


@csrf_exempt
async def exchange_view(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        response = _refuse(405, "method_not_allowed", "Use POST.")
        response["Allow"] = "POST"
        return response
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _refuse(400, "malformed_request", "Bad Content-Length.")
    if length > MAX_BODY_BYTES:
        return _refuse(413, "body_too_large", f"The body is limited to {MAX_BODY_BYTES} bytes.")
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        return _refuse(413, "body_too_large", f"The body is limited to {MAX_BODY_BYTES} bytes.")
    refusal, device_id, answer, hold, long_poll = await sync_to_async(_handle, thread_sensitive=False)(
        request, body
    )
    if refusal is not None:
        return refusal
    assert answer is not None
    if hold > 0:
        get = sync_to_async(cache.get, thread_sensitive=False)

        async def ready() -> bool:
            return bool(await get(has_work_key(device_id)))

        if await wake.hold(device_id, hold, ready):
            work = await sync_to_async(collect_work, thread_sensitive=False)(device_id)
            if work:
                return JsonResponse(ExchangeResponse(acks=answer.acks, work=tuple(work), poll_after=0.0).to_json())
        if long_poll:
            # Held to the end: the agent may ask again at once (it is listening, not polling).
            answer = ExchangeResponse(acks=answer.acks, work=(), poll_after=0.0)
    return JsonResponse(answer.to_json())
