"""Walking the URL configuration, so tests can be generated for every route (STYLE: NetBox).

A ``Route`` is one leaf of ``django.urls.get_resolver()`` with its full route string, qualified
name, the view class (when it has one) and the HTTP methods that class implements.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern

_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
_METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Route:
    route: str  # e.g. "api/v1/orgs/<slug:org>/devices/<uuid:pk>/"
    name: str  # qualified, e.g. "api:device-detail"; "" when unnamed
    view_class: Any
    regex: bool  # a re_path: its kwargs cannot be read from the route string

    def __str__(self) -> str:
        return self.name or self.route

    @property
    def params(self) -> list[str]:
        return [m.group("name") for m in _PARAM.finditer(self.route)]

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/")

    @property
    def methods(self) -> set[str]:
        if self.view_class is None:
            return {"get"}  # a function view: assume it answers GET
        return {m for m in _METHODS if hasattr(self.view_class, m)}

    @property
    def collection(self) -> str:
        """The first path segment after the ``<org>`` parameter ('' for the organisation itself)."""
        parts = [p for p in self.route.split("/") if p]
        for i, part in enumerate(parts):
            m = _PARAM.fullmatch(part)
            if m and m.group("name") == "org":
                rest = parts[i + 1 :]
                return rest[0] if rest and not _PARAM.fullmatch(rest[0]) else ""
        return ""

    def segment_before(self, param: str) -> str:
        """The literal path segment right before ``<…:param>`` (the collection it names a member of)."""
        parts = [p for p in self.route.split("/") if p]
        for i, part in enumerate(parts):
            m = _PARAM.fullmatch(part)
            if m and m.group("name") == param and i > 0:
                return parts[i - 1]
        return ""

    def path(self, **kwargs: Any) -> str:
        """The URL path with every ``<…:name>`` replaced by ``kwargs[name]``."""

        def sub(m: re.Match[str]) -> str:
            return str(kwargs[m.group("name")])

        return "/" + _PARAM.sub(sub, self.route)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns, "", ""))


def _walk(patterns: Any, prefix: str, namespace: str) -> Iterator[Route]:
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = namespace
            if p.namespace:
                ns = f"{namespace}{p.namespace}:"
            yield from _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            callback = p.callback
            view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
            yield Route(
                route=prefix + str(p.pattern),
                name=f"{namespace}{p.name}" if p.name else "",
                view_class=view_class,
                regex=not isinstance(p.pattern, RoutePattern),
            )


def org_routes() -> list[Route]:
    """Every route whose pattern names the acting organisation (``<org>``)."""
    return [r for r in all_routes() if "org" in r.params or "?P<org>" in r.route]
