"""REST API of service master keys and session keys (DESIGN §6, docs/session-keys.md §6).

- ``POST orgs/<org>/security-domains/<id>/master-key/`` ``{"key": hex}`` (deposit a copy in the
  owner's vault: custody ``portal``) or ``{"kcv": hex, "key_length": n}`` (custody ``provider``):
  201 with KVN, custody, KCV. The SD's owner only, acting for itself.
- ``POST orgs/<org>/security-domains/<id>/session-keys/`` ``{"service": name, "epoch": n}``: 200 with
  the session key (hex) the SE derives for that service and epoch. Only the master key's owner,
  for itself; 404 ``no_master_key`` for anyone else or none; 409 ``master_key_provider_held`` when
  Tessera holds only the KCV. The key is the provider's own key material, returned to it alone and
  never stored or logged; the audit event records service, epoch and the master key's KCV.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from devices.models import SecurityDomain
from gp.sessionkeys import EPOCH_MAX, SERVICE_MAX
from keys import sessionkeys as services
from portal.api import OrgScopedAPIView, StrictSerializer
from portal.errors import InvalidError
from tenants.access import Action, get_visible


class MasterKeyIn(StrictSerializer):
    key = serializers.CharField(
        required=False, max_length=64, help_text="The master key, hex (portal custody)"
    )
    kcv = serializers.CharField(required=False, max_length=6, help_text="Its KCV, hex (provider custody)")
    key_length = serializers.IntegerField(required=False, min_value=16, max_value=32)


class MasterKeyOut(serializers.Serializer):
    id = serializers.UUIDField()
    security_domain = serializers.UUIDField(source="security_domain_id")
    kvn = serializers.IntegerField()
    key_length = serializers.IntegerField()
    custody = serializers.CharField()
    kcv = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()


class SessionKeyIn(StrictSerializer):
    service = serializers.CharField(max_length=SERVICE_MAX, help_text="a-z 0-9 . _ -, 1-32 characters")
    epoch = serializers.IntegerField(min_value=0, max_value=EPOCH_MAX)


class SessionKeyOut(serializers.Serializer):
    security_domain = serializers.UUIDField()
    service = serializers.CharField()
    epoch = serializers.IntegerField()
    key = serializers.CharField(help_text="The 16-byte session key, hex: the provider's own key material")
    master_key_kcv = serializers.CharField()


def _hex(value: str, name: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidError(f"{name} must be hex.", code="invalid_hex", fields={name: ["Not hex."]}) from None


class MasterKeyView(OrgScopedAPIView):
    action = Action.DEVICES_VIEW
    write_action = Action.KEYS_MANAGE

    @extend_schema(request=MasterKeyIn, responses={201: MasterKeyOut})
    def post(self, request: Request, org: str, pk: str) -> Response:
        sd = get_visible(SecurityDomain, self.actor, Action.DEVICES_VIEW, pk=pk)
        ser = MasterKeyIn(data=request.data)
        ser.is_valid(raise_exception=True)
        data: dict[str, Any] = ser.validated_data
        key = _hex(data["key"], "key") if "key" in data else None
        mk = services.master_key_register(
            actor=self.actor,
            security_domain=sd,
            key=key,
            kcv=data.get("kcv"),
            key_length=data.get("key_length", 16),
        )
        return Response(MasterKeyOut(mk).data, status=status.HTTP_201_CREATED)


class SessionKeyView(OrgScopedAPIView):
    action = Action.DEVICES_VIEW
    write_action = Action.KEYS_MANAGE

    @extend_schema(request=SessionKeyIn, responses=SessionKeyOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        sd = get_visible(SecurityDomain, self.actor, Action.DEVICES_VIEW, pk=pk)
        ser = SessionKeyIn(data=request.data)
        ser.is_valid(raise_exception=True)
        mk, key = services.session_key_derive(
            actor=self.actor,
            security_domain=sd,
            service=ser.validated_data["service"],
            epoch=ser.validated_data["epoch"],
        )
        out = {
            "security_domain": sd.pk,
            "service": ser.validated_data["service"],
            "epoch": ser.validated_data["epoch"],
            "key": key.hex().upper(),
            "master_key_kcv": mk.kcv,
        }
        resp = Response(SessionKeyOut(out).data)
        resp["Cache-Control"] = "no-store"
        return resp
