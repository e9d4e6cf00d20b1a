"""Server-rendered pages. Tenant pages live under ``/o/<org>/``."""

from __future__ import annotations

urlpatterns: list = []
