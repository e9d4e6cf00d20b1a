"""OpenAPI extensions (drf-spectacular) for the project's own classes."""

from __future__ import annotations

from drf_spectacular.authentication import SessionScheme


class Session401Scheme(SessionScheme):
    target_class = "portal.authentication.SessionAuthentication401"
    name = "cookieAuth"
