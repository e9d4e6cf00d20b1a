"""Template context: the signed-in user's organisations, for the organisation switcher."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def organisations(request: HttpRequest) -> dict[str, Any]:
    from django.conf import settings

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"my_memberships": []}
    from tenants.access import memberships_of

    # demo_stories: the dashboard links the field stories' page in demo mode (make run, DEBUG).
    return {
        "my_memberships": list(memberships_of(user).order_by("org__name")),
        "demo_stories": settings.DEBUG,
    }
