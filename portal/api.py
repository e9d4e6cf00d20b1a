"""API conventions shared by every app (issue 2 item 6).

- Errors are JSON ``{"error": {"code": ..., "message": ..., "fields": {...}}}`` with a stable code.
- ``OrgScopedAPIView`` resolves the acting organisation from the URL (and an explicit
  ``on_behalf_of``) before any handler runs, so no handler can forget it.
- ``StrictSerializer`` refuses unknown fields instead of silently dropping them, and numbers
  where a string is expected.
- ``portal.parsers.StrictJSONParser`` (the API's JSON parser) refuses JSON that no database
  stores or that would crash the decoder.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from portal.errors import DomainError
from tenants.access import Action, Actor, require, resolve_actor

log = logging.getLogger(__name__)


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_request",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


def _error(code: str, message: str, status: int, fields: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return Response({"error": body}, status=status)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return _error(exc.code, exc.message, exc.status, exc.fields)
    if isinstance(exc, Http404):
        return _error("not_found", "Not found.", 404)
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled API error", exc_info=exc)
        return _error("internal_error", "Something went wrong on our side; it has been logged.", 500)
    code = next((c for t, c in _DRF_CODES.items() if isinstance(exc, t)), "error")
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        first = next(iter(detail.items()), ("", ""))
        msg = f"Invalid input: {first[0]}: {_flatten(first[1])}" if first[0] else "Invalid input."
        resp = _error(code, msg, response.status_code, detail)
    else:
        resp = _error(code, str(getattr(exc, "detail", exc)), response.status_code)
    for header in ("WWW-Authenticate", "Allow", "Retry-After"):
        if header in response:
            resp[header] = response[header]
    return resp


def _flatten(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(_flatten(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    return str(value)


class StrictSerializer(serializers.Serializer):
    """An input serializer that rejects fields it does not declare, and non-strings for strings."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        # DRF turns 12 into "12" for a CharField; a number where text belongs is a client's bug.
        not_text = sorted(
            name
            for name, f in self.fields.items()
            if isinstance(f, serializers.CharField)
            and name in data
            and data[name] is not None
            and not isinstance(data[name], str)
        )
        if not_text:
            raise serializers.ValidationError({name: ["Expected a string."] for name in not_text})
        return super().to_internal_value(data)


class NoInput(StrictSerializer):
    """The body of an action that takes no fields: anything sent is refused, not ignored."""


ON_BEHALF_PARAM = OpenApiParameter(
    "on_behalf_of",
    OpenApiTypes.STR,
    description="Act for this mandator organisation (slug); needs an active mandate covering the action.",
    required=False,
)


class OrgScopedAPIView(APIView):
    """Base view for ``/api/v1/orgs/<org>/…``: resolves ``self.actor`` before any handler.

    ``action`` is what the view needs; ``require``-style checks happen in ``visible_to``.
    ``write_action``, when set, is required before any unsafe method's handler runs, so a caller
    who may not write learns nothing from input validation (on behalf: 404, weak role: 403).
    On-behalf acting comes from the ``on_behalf_of`` query parameter or the
    ``X-Tessera-On-Behalf-Of`` header, never implicitly.
    """

    action: Action = Action.ORG_VIEW
    write_action: Action | None = None
    actor: Actor

    def context(self, request: Request, **extra: Any) -> dict[str, Any]:
        """Serializer context: the request (absolute ``url`` fields) and the org slug of the URL."""
        return {"request": request, "org": self.kwargs.get("org"), **extra}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        behalf = request.query_params.get("on_behalf_of") or request.headers.get("X-Tessera-On-Behalf-Of")
        self.actor = resolve_actor(request.user, kwargs["org"], behalf)
        if self.write_action is not None and request.method not in SAFE_METHODS:
            require(self.actor, self.write_action)


def json_404(request: Any, exception: Exception | None = None) -> Any:
    """404 for the whole site: JSON for the API, the normal page elsewhere."""
    if request.path.startswith(("/api/", "/agent/")):
        return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def json_500(request: Any) -> Any:
    if request.path.startswith(("/api/", "/agent/")):
        return JsonResponse(
            {
                "error": {
                    "code": "internal_error",
                    "message": "Something went wrong on our side; it has been logged.",
                }
            },
            status=500,
        )
    from django.views.defaults import server_error

    return server_error(request)


def json_400(request: Any, exception: Exception | None = None) -> Any:
    if request.path.startswith(("/api/", "/agent/")):
        return JsonResponse({"error": {"code": "bad_request", "message": "Bad request."}}, status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception or Exception())


__all__ = [
    "ON_BEHALF_PARAM",
    "NoInput",
    "OrgScopedAPIView",
    "StrictSerializer",
    "exception_handler",
    "extend_schema",
]


class ListMixin:
    """Paginated list output for an ``OrgScopedAPIView``."""

    def paginated(
        self, request: Request, queryset: Any, serializer_class: type[serializers.Serializer], **ctx: Any
    ) -> Response:
        from rest_framework.pagination import LimitOffsetPagination

        paginator = LimitOffsetPagination()
        page: Any = paginator.paginate_queryset(queryset, request, view=self)  # type: ignore[arg-type]
        data = serializer_class(page, many=True, context=self.context(request, **ctx)).data
        return paginator.get_paginated_response(data)

    def context(self, request: Request, **extra: Any) -> dict[str, Any]:
        return {"request": request, "org": getattr(self, "kwargs", {}).get("org"), **extra}
