"""Reads of the tenants app that are not scoped to one acting organisation.

Tenant-owned reads go through ``tenants.access.visible_to``. What is here is deliberately
platform-level: looking up an organisation by its public short name (to name a mandate's
grantee), the platform operator's queue of pending applications, and the short names of the
organisations an audit event mentions (already visible to the reader through the event itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from tenants.models import Organisation, OrgStatus


def organisation_active_by_slug(*, slug: str) -> Organisation | None:
    """The active organisation with this short name, or None. Short names are public: they are
    how organisations name each other when granting mandates."""
    if not slug or len(slug) > 50:
        return None
    return Organisation.objects.filter(slug=slug, status=OrgStatus.ACTIVE).first()


def applications_pending() -> QuerySet[Organisation]:
    """The platform operator's queue, oldest first."""
    return Organisation.objects.filter(status=OrgStatus.PENDING).order_by("created_at")


def application_get(*, pk: Any) -> Organisation | None:
    try:
        UUID(str(pk))
    except ValueError:
        return None
    return Organisation.objects.filter(pk=pk).first()


def organisation_slugs(*, ids: Iterable[Any]) -> dict[Any, str]:
    """Short names of the organisations whose ids appear in rows the caller already sees."""
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    return dict(Organisation.objects.filter(pk__in=wanted).values_list("pk", "slug"))
