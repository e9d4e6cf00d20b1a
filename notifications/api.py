"""REST API of webhooks (issue 6 item 4), under ``/api/v1/orgs/<org>/webhooks/``.

- ``GET`` / ``POST webhooks/`` — list; create ``{"url", "event_types", "description"?}``: 201 with
  the secret, shown this once. Bad input is 400 ``invalid_url`` | ``url_not_https`` |
  ``url_not_allowed`` | ``unknown_event_type`` | ``too_many_event_types`` | ``invalid``.
- ``GET`` / ``PATCH`` / ``DELETE webhooks/<id>/`` — one; change url, event types, description,
  active; delete (with its delivery log).
- ``POST webhooks/<id>/test/`` — send a ``webhook.test`` event now: 201 with the delivery created.
- ``GET webhooks/<id>/deliveries/`` — the delivery log, newest first.
- ``POST webhooks/<id>/rotate-secret/`` ``{"expire_previous"?: bool}`` — a new secret, shown
  once; the previous one also signs for 24 hours unless ``expire_previous``.
Owners and admins manage; operators and auditors read; never on a mandator's behalf (404).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from notifications import selectors, services
from notifications import serializers as s
from notifications.access import MANAGE, VIEW
from portal.api import ListMixin, NoInput, OrgScopedAPIView


class WebhookListView(ListMixin, OrgScopedAPIView):
    action = VIEW
    write_action = MANAGE

    @extend_schema(responses=s.WebhookOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        return self.paginated(request, selectors.webhook_list(actor=self.actor), s.WebhookOut)

    @extend_schema(request=s.WebhookIn, responses={201: s.WebhookSecretOut})
    def post(self, request: Request, org: str) -> Response:
        ser = s.WebhookIn(data=request.data)
        ser.is_valid(raise_exception=True)
        webhook, secret = services.webhook_create(actor=self.actor, **ser.validated_data)
        out = s.WebhookSecretOut(webhook, context=self.context(request, secret=secret))
        return Response(out.data, status=status.HTTP_201_CREATED)


class WebhookDetailView(OrgScopedAPIView):
    action = VIEW
    write_action = MANAGE

    @extend_schema(responses=s.WebhookOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        return Response(s.WebhookOut(webhook, context=self.context(request)).data)

    @extend_schema(request=s.WebhookPatchIn, responses=s.WebhookOut)
    def patch(self, request: Request, org: str, pk: str) -> Response:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        ser = s.WebhookPatchIn(data=request.data)
        ser.is_valid(raise_exception=True)
        webhook = services.webhook_update(actor=self.actor, webhook=webhook, **ser.validated_data)
        return Response(s.WebhookOut(webhook, context=self.context(request)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, org: str, pk: str) -> Response:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        services.webhook_delete(actor=self.actor, webhook=webhook)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookTestView(OrgScopedAPIView):
    action = VIEW
    write_action = MANAGE

    @extend_schema(request=NoInput, responses={201: s.DeliveryOut})
    def post(self, request: Request, org: str, pk: str) -> Response:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        NoInput(data=request.data).is_valid(raise_exception=True)
        delivery = services.webhook_test_send(actor=self.actor, webhook=webhook)
        delivery.refresh_from_db()
        return Response(s.DeliveryOut(delivery).data, status=status.HTTP_201_CREATED)


class WebhookDeliveryListView(ListMixin, OrgScopedAPIView):
    action = VIEW

    @extend_schema(responses=s.DeliveryOut(many=True))
    def get(self, request: Request, org: str, pk: str) -> Response:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        return self.paginated(
            request, selectors.delivery_list(actor=self.actor, webhook=webhook), s.DeliveryOut
        )


class WebhookRotateSecretView(OrgScopedAPIView):
    action = VIEW
    write_action = MANAGE

    @extend_schema(request=s.RotateSecretIn, responses=s.WebhookSecretOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        webhook = selectors.webhook_get(actor=self.actor, pk=pk)
        ser = s.RotateSecretIn(data=request.data)
        ser.is_valid(raise_exception=True)
        secret = services.webhook_rotate_secret(actor=self.actor, webhook=webhook, **ser.validated_data)
        return Response(s.WebhookSecretOut(webhook, context=self.context(request, secret=secret)).data)
