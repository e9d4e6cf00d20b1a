"""Output of key sets: key check values, never key bytes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class KeySetOut(serializers.Serializer):
    id = serializers.UUIDField()
    kvn = serializers.IntegerField()
    scp = serializers.CharField()
    algorithm = serializers.CharField()
    key_length = serializers.IntegerField()
    status = serializers.CharField()
    kcv = serializers.SerializerMethodField()
    sequence_counter = serializers.IntegerField(allow_null=True)
    i_param = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    crypto_period_end = serializers.DateField(allow_null=True)

    def get_kcv(self, obj: Any) -> dict[str, str]:
        return obj.kcvs
