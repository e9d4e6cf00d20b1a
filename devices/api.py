"""REST API of devices, secure elements and security domains, with enrolment.

Enrolment (issue 4):
- ``POST devices/`` {serial, kind, identity_public_key (PEM, EC P-256), key_id?, se_issuer?,
  se_serial?} — a device manufacturer enrols a device; ``key_id`` (as ``agent init`` prints it)
  must match the key. ``se_issuer``+``se_serial`` is its pairing claim (``devices.services``).
- ``POST devices/batch/`` — a CSV or JSON file (multipart ``file``) or ``{"devices": [...]}``.
- ``POST devices/<id>/suspend/`` and ``…/reactivate/`` — the manufacturer only.
- ``POST secure-elements/`` {serial, kind?, cplc?, isd_aid, isd_keys: {enc, mac, dek, kvn?}, kvn,
  i_param?, sequence_counter?, device?: {manufacturer, serial}} — an SE issuer registers an SE,
  its ISD and the ISD key set (sealed in its vault). Answers show KCVs, never keys.
- ``POST secure-elements/batch/`` — the same rows, as a file or ``{"secure_elements": [...]}``.

Batches answer 200 with ``{created, failed, rows: [{row, serial, status, error, id?}]}`` when at
least one row was created, and 400 ``invalid_batch`` with the same report in ``error.fields.rows``
when none was; 413 beyond 2 MiB or 10,000 rows.

These adapters call ``keys`` services and selectors (SE enrolment imports the ISD keys; device
details show key sets): the dependency points from the outermost layer inward.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from devices import batch, selectors, services
from devices import serializers as s
from devices.models import Device, SecureElement, SecurityDomain
from keys import selectors as key_selectors
from keys import services as key_services
from keys.serializers import KeySetOut
from portal.api import ON_BEHALF_PARAM, ListMixin, NoInput, OrgScopedAPIView
from tenants.access import Action, Actor, get_visible, visible_to


def key_sets_context(actor: Actor, sd_ids: list[Any]) -> dict[Any, Any]:
    """KCV views of the key sets the actor may see, by SD id."""
    return {
        sd_id: KeySetOut(sets, many=True).data
        for sd_id, sets in key_selectors.keysets_by_sd(actor, sd_ids).items()
    }


def device_detail_data(request: Request, org: str, actor: Actor, device: Device) -> Any:
    ses, sds_by_se = selectors.device_hardware(actor=actor, device=device)
    sd_ids = [sd.pk for sds in sds_by_se.values() for sd in sds]
    ctx = {
        "request": request,
        "org": org,
        "secure_elements": ses,
        "sds_by_se": sds_by_se,
        "key_sets_by_sd": key_sets_context(actor, sd_ids),
    }
    return s.DeviceDetailOut(device, context=ctx).data


# --- devices --------------------------------------------------------------------------------


def device_from_row(actor: Actor, data: dict[str, Any]) -> Device:
    return services.device_register(
        actor=actor,
        serial=data["serial"],
        kind=data["kind"],
        identity_public_key=data["identity_public_key"],
        key_id=data.get("key_id", ""),
        se_issuer=data.get("se_issuer", ""),
        se_serial=data.get("se_serial", ""),
    )


def _device_csv_row(record: dict[str, str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v != ""}


DEVICE_BATCH = batch.BatchFormat(
    list_key="devices",
    columns=("serial", "kind", "identity_public_key", "key_id", "se_issuer", "se_serial"),
    required_columns=("serial", "kind", "identity_public_key"),
    from_csv=_device_csv_row,
)


class DeviceListView(ListMixin, OrgScopedAPIView):
    write_action = Action.DEVICES_MANAGE

    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.DeviceOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        return self.paginated(request, selectors.device_list(actor=self.actor), s.DeviceOut)

    @extend_schema(request=s.DeviceIn, responses={201: s.DeviceDetailOut})
    def post(self, request: Request, org: str) -> Response:
        ser = s.DeviceIn(data=request.data)
        ser.is_valid(raise_exception=True)
        device = device_from_row(self.actor, ser.validated_data)
        return Response(device_detail_data(request, org, self.actor, device), status=status.HTTP_201_CREATED)


def run_batch_request(
    request: Request,
    fmt: batch.BatchFormat,
    body_serializer: type[Any],
    row_serializer: type[Any],
    handle: Any,
) -> Response:
    if batch.too_large_body(request.META.get("CONTENT_LENGTH")):
        raise batch.BatchTooLarge(
            f"At most {batch.MAX_BATCH_BYTES // (1024 * 1024)} MiB per batch; split it."
        )
    if (request.content_type or "").startswith("multipart/form-data"):
        rows = batch.rows_from_upload(request.FILES.get("file"), fmt)
    else:
        ser = body_serializer(data=request.data)
        ser.is_valid(raise_exception=True)
        rows = batch.check_row_count(ser.validated_data[fmt.list_key])
    report = batch.run_batch(rows, row_serializer, handle)
    summary = batch.report_summary(report)
    if not summary["created"]:
        raise batch.BatchInvalid(
            f"No row of the batch was valid ({summary['failed']} refused); see the report in fields.rows.",
            fields={"rows": report},
        )
    return Response(summary)


class DeviceBatchView(OrgScopedAPIView):
    write_action = Action.DEVICES_MANAGE

    @extend_schema(request=s.DeviceBatchIn, responses={200: dict})
    def post(self, request: Request, org: str) -> Response:
        return run_batch_request(
            request, DEVICE_BATCH, s.DeviceBatchIn, s.DeviceIn, lambda d: device_from_row(self.actor, d)
        )


class DeviceDetailView(OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.DeviceDetailOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        return Response(device_detail_data(request, org, self.actor, device))


class _DeviceStatusView(OrgScopedAPIView):
    write_action = Action.DEVICES_MANAGE
    change: Any = None

    @extend_schema(request=NoInput, responses=s.DeviceOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        NoInput(data=request.data).is_valid(raise_exception=True)
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        device = type(self).change(actor=self.actor, device=device)
        return Response(s.DeviceOut(device, context={"request": request, "org": org}).data)


class DeviceSuspendView(_DeviceStatusView):
    change = staticmethod(services.device_suspend)


class DeviceReactivateView(_DeviceStatusView):
    change = staticmethod(services.device_reactivate)


# --- secure elements ----------------------------------------------------------------------------


def secure_element_from_row(actor: Actor, data: dict[str, Any]) -> key_services.SecureElementEnrolment:
    keys = key_services.static_keys_from_hex(
        enc=data["isd_keys"]["enc"], mac=data["isd_keys"]["mac"], dek=data["isd_keys"]["dek"]
    )
    device = data.get("device") or {}
    return key_services.secure_element_enrol(
        actor=actor,
        serial=data["serial"],
        kind=data["kind"],
        isd_aid=data["isd_aid"],
        keys=keys,
        kvn=data["kvn"],
        i_param=data["i_param"],
        sequence_counter=data.get("sequence_counter"),
        cplc=data.get("cplc", ""),
        device_manufacturer=device.get("manufacturer", ""),
        device_serial=device.get("serial", ""),
    )


def enrolment_data(request: Request, org: str, enrolment: key_services.SecureElementEnrolment) -> Any:
    ctx = {"request": request, "org": org}
    data = dict(s.SecureElementOut(enrolment.secure_element, context=ctx).data)
    data["isd"] = {
        "aid": enrolment.isd.aid,
        "key_sets": KeySetOut([enrolment.keyset], many=True).data,
    }
    device = enrolment.device
    claimed = bool(enrolment.secure_element.device_serial)
    data["pairing"] = {
        "device": device.serial if device else None,
        "state": "paired" if device else ("pending" if claimed else "none"),
    }
    return data


def _se_csv_row(record: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        k: record[k] for k in ("serial", "kind", "cplc", "isd_aid") if record.get(k, "") != ""
    }
    row["isd_keys"] = {k: record.get(k, "") for k in ("enc", "mac", "dek")}
    for k in ("kvn", "i_param", "sequence_counter"):
        if record.get(k, "") != "":
            row[k] = batch.csv_int(record[k])
    if record.get("device_manufacturer") or record.get("device_serial"):
        row["device"] = {
            "manufacturer": record.get("device_manufacturer", ""),
            "serial": record.get("device_serial", ""),
        }
    return row


SE_BATCH = batch.BatchFormat(
    list_key="secure_elements",
    columns=(
        "serial",
        "kind",
        "cplc",
        "isd_aid",
        "enc",
        "mac",
        "dek",
        "kvn",
        "i_param",
        "sequence_counter",
        "device_manufacturer",
        "device_serial",
    ),
    required_columns=("serial", "isd_aid", "enc", "mac", "dek", "kvn"),
    from_csv=_se_csv_row,
)


class Created:
    """A batch row result: the enrolment's SE is what the report names."""

    def __init__(self, enrolment: key_services.SecureElementEnrolment) -> None:
        self.pk = enrolment.secure_element.pk


class SecureElementListView(ListMixin, OrgScopedAPIView):
    write_action = Action.DEVICES_MANAGE

    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.SecureElementOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        qs = visible_to(SecureElement, self.actor, Action.DEVICES_VIEW).select_related(
            "issuer", "supplier", "device"
        )
        return self.paginated(request, qs, s.SecureElementOut)

    @extend_schema(request=s.SecureElementIn, responses={201: dict})
    def post(self, request: Request, org: str) -> Response:
        ser = s.SecureElementIn(data=request.data)
        ser.is_valid(raise_exception=True)
        enrolment = secure_element_from_row(self.actor, ser.validated_data)
        return Response(enrolment_data(request, org, enrolment), status=status.HTTP_201_CREATED)


class SecureElementBatchView(OrgScopedAPIView):
    write_action = Action.DEVICES_MANAGE

    @extend_schema(request=s.SecureElementBatchIn, responses={200: dict})
    def post(self, request: Request, org: str) -> Response:
        return run_batch_request(
            request,
            SE_BATCH,
            s.SecureElementBatchIn,
            s.SecureElementIn,
            lambda d: Created(secure_element_from_row(self.actor, d)),
        )


class SecureElementDetailView(OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.SecureElementOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        se = get_visible(SecureElement, self.actor, Action.DEVICES_VIEW, pk=pk)
        return Response(s.SecureElementOut(se, context={"request": request, "org": org}).data)


class SecurityDomainListView(ListMixin, OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.SecurityDomainOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        qs = visible_to(SecurityDomain, self.actor, Action.DEVICES_VIEW).select_related("owner", "parent")
        return self.paginated(request, qs, s.SecurityDomainOut)


class SecurityDomainDetailView(OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.SecurityDomainOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        sd = get_visible(SecurityDomain, self.actor, Action.DEVICES_VIEW, pk=pk)
        ctx = {
            "request": request,
            "org": org,
            "key_sets_by_sd": key_sets_context(self.actor, [sd.pk]),
        }
        return Response(s.SecurityDomainOut(sd, context=ctx).data)
