"""Admin: key sets and data keys read-only, KCVs only — the sealed bytes are never shown."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from keys.models import KeySet, OrgDataKey


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(KeySet)
class KeySetAdmin(ReadOnly):
    list_display = ("id", "owner", "security_domain", "kvn", "scp", "status", "kcv_enc", "kcv_mac", "kcv_dek")
    list_filter = ("status", "scp")
    fields = (
        "id",
        "owner",
        "security_domain",
        "kvn",
        "scp",
        "algorithm",
        "key_length",
        "kcv_enc",
        "kcv_mac",
        "kcv_dek",
        "status",
        "sequence_counter",
        "i_param",
        "created_at",
        "crypto_period_end",
    )


@admin.register(OrgDataKey)
class OrgDataKeyAdmin(ReadOnly):
    list_display = ("org", "master_key_id", "created_at", "shredded_at")
    fields = ("org", "master_key_id", "created_at", "shredded_at")
