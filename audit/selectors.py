"""Reading audit events: an organisation sees the events that concern it."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from audit.models import AuditEvent


def audit_events_for_org(*, org_id: Any) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(org_links__org_id=org_id).order_by("-seq").distinct()
