"""REST API of devices, secure elements and security domains, with enrolment.

Enrolment (issue 4):
- ``POST devices/`` {serial, kind, identity_public_key (PEM, EC P-256), key_id?, se_issuer?,
  se_serial?} — a device manufacturer enrols a device; ``key_id`` (as ``agent init`` prints it)
  must match the key. ``se_issuer``+``se_serial`` is its pairing claim (``devices.services``).
- ``POST devices/batch/`` — a CSV or JSON file (multipart ``file``) or ``{"devices": [...]}``.
- ``POST devices/<id>/suspend/`` and ``…/reactivate/`` — the manufacturer only.
- ``POST secure-elements/`` {serial, kind?, cplc?, isd_aid, isd_keys: {enc, mac, dek, kvn?}, kvn,
  i_param?, sequence_counter?, device?: {manufacturer, serial}, casd_public_key?} — an SE issuer
  registers an SE, its ISD and the ISD key set (sealed in its vault). Answers show KCVs, never
  keys. A TEE (``kind: "tee"``) is registered without ``isd_keys``/``kvn``/``i_param``/
  ``sequence_counter`` (400 ``isd_keys_not_for_tee`` when given; an SE without them is 400
  ``isd_keys_required``); its ``casd_public_key`` is the token's receive key.
- ``POST secure-elements/batch/`` — the same rows, as a file or ``{"secure_elements": [...]}``.

Batches answer 200 with ``{created, failed, rows: [{row, serial, status, error, id?}]}`` when at
least one row was created, and 400 ``invalid_batch`` with the same report in ``error.fields.rows``
when none was; 413 beyond 2 MiB or 10,000 rows.

These adapters call ``keys`` services and selectors (SE enrolment imports the ISD keys; device
details show key sets): the dependency points from the outermost layer inward.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from devices import batch, selectors, services
from devices import serializers as s
from devices.models import Device, SecureElement, SecureElementKind, SecurityDomain
from gp.card.manufacture import BATCH_COLUMNS
from keys import handover, rotation
from keys import selectors as key_selectors
from keys import services as key_services
from keys.access import KEY_MANDATE_ACTIONS
from keys.serializers import KeySetListOut, KeySetOut
from portal.api import ON_BEHALF_PARAM, ListMixin, NoInput, OrgScopedAPIView, StrictSerializer
from portal.errors import InvalidError, NotFoundError
from tenants.access import Action, Actor, get_visible, visible_to


def key_sets_context(actor: Actor, sd_ids: list[Any], device: Device | None = None) -> dict[Any, Any]:
    """KCV views of the key sets the actor may see, by SD id, each with its key-policy assessment
    (against ``device``'s end of service when the SDs are all on it)."""
    ctx = {"end_of_service": device.end_of_service} if device is not None else {}
    return {
        sd_id: KeySetOut(sets, many=True, context=ctx).data
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
        "key_sets_by_sd": key_sets_context(actor, sd_ids, device),
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
        end_of_service=data.get("end_of_service"),
    )


def _device_csv_row(record: dict[str, str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v != ""}


DEVICE_BATCH = batch.BatchFormat(
    list_key="devices",
    columns=("serial", "kind", "identity_public_key", "key_id", "se_issuer", "se_serial", "end_of_service"),
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
    """``GET`` a device with its hardware and key sets; ``PATCH`` {end_of_service: date|null} — the
    manufacturer or an SE issuer of the device, for itself (others who see it: 403)."""

    write_action = Action.DEVICES_MANAGE

    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.DeviceDetailOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        return Response(device_detail_data(request, org, self.actor, device))

    @extend_schema(request=s.DeviceUpdateIn, responses=s.DeviceDetailOut)
    def patch(self, request: Request, org: str, pk: str) -> Response:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        ser = s.DeviceUpdateIn(data=request.data)
        ser.is_valid(raise_exception=True)
        device = services.device_set_end_of_service(
            actor=self.actor, device=device, end_of_service=ser.validated_data["end_of_service"]
        )
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
    given = data.get("isd_keys")
    keys = (
        key_services.static_keys_from_hex(enc=given["enc"], mac=given["mac"], dek=given["dek"])
        if given is not None
        else None
    )
    device = data.get("device") or {}
    casd_der = handover.casd_public_key_der(data["casd_public_key"]) if data.get("casd_public_key") else b""
    enrolment = key_services.secure_element_enrol(
        actor=actor,
        serial=data["serial"],
        kind=data["kind"],
        isd_aid=data["isd_aid"],
        keys=keys,
        kvn=data.get("kvn"),
        i_param=data.get("i_param"),
        sequence_counter=data.get("sequence_counter"),
        cplc=data.get("cplc", ""),
        device_manufacturer=device.get("manufacturer", ""),
        device_serial=device.get("serial", ""),
    )
    if casd_der:
        casd = handover.secure_element_casd_record(
            actor=actor, secure_element=enrolment.secure_element, casd_der=casd_der
        )
        enrolment = dataclasses.replace(enrolment, casd=casd)
    return enrolment


def enrolment_data(request: Request, org: str, enrolment: key_services.SecureElementEnrolment) -> Any:
    ctx = {"request": request, "org": org}
    data = dict(s.SecureElementOut(enrolment.secure_element, context=ctx).data)
    data["isd"] = {
        "aid": enrolment.isd.aid,
        "key_sets": KeySetOut([enrolment.keyset] if enrolment.keyset else [], many=True).data,
    }
    device = enrolment.device
    claimed = bool(enrolment.secure_element.device_serial)
    data["pairing"] = {
        "device": device.serial if device else None,
        "state": "paired" if device else ("pending" if claimed else "none"),
    }
    if enrolment.casd is not None:
        data["casd"] = enrolment.casd
    return data


def _se_csv_row(record: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        k: record[k] for k in ("serial", "kind", "cplc", "isd_aid") if record.get(k, "") != ""
    }
    if any(record.get(k, "") != "" for k in ("enc", "mac", "dek")):  # a TEE's row leaves them blank
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
    required_columns=("serial", "isd_aid"),  # an SE row needs enc, mac, dek, kvn; a TEE row none
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


class KeySetListView(ListMixin, OrgScopedAPIView):
    """``GET key-sets/?flag=…``: the live key sets the actor may see (KCVs only), each with its
    key-policy assessment; ``flag`` keeps those whose status is ``ok``,
    ``crypto_period_ends_first``, ``strength_expires_before_device`` or ``expired``, or
    ``to_rotate`` (expired, too weak for the device, or a crypto-period ending within 90 days)."""

    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=KeySetListOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        mandate = self.actor.mandate
        if mandate is not None and not KEY_MANDATE_ACTIONS & set(mandate.actions):
            # on someone's behalf, key sets are reachable only under a key mandate (keys.access)
            raise NotFoundError("Not found.")
        flag = request.query_params.get("flag")
        if flag is None:
            qs: Any = rotation.live_keysets(self.actor)
        elif flag in rotation.FLAGS:
            qs = rotation.keysets_flagged(self.actor, flag)
        else:
            raise InvalidError(
                f"flag must be one of {', '.join(rotation.FLAGS)}.", fields={"flag": ["Unknown."]}
            )
        return self.paginated(request, qs, KeySetListOut)


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
            "key_sets_by_sd": key_sets_context(self.actor, [sd.pk], sd.secure_element.device),
        }
        return Response(s.SecurityDomainOut(sd, context=ctx).data)


# --- the SE supplier's manufacturing batch, and SE issuers' import keys (issue 5 item 6) ----------


class SuppliedSecureElementIn(StrictSerializer):
    """One row of an SE supplier's batch: the ISD keys arrive wrapped to the SE issuer's import key."""

    serial = serializers.CharField(max_length=64)
    kind = serializers.ChoiceField(choices=SecureElementKind.choices, default=SecureElementKind.SE)
    cplc = serializers.CharField(max_length=128, required=False, allow_blank=True)
    isd_aid = serializers.CharField(max_length=32)
    # an SE's (kvn and wrapped_isd_keys required by the service); a TEE row has none
    kvn = serializers.IntegerField(min_value=1, max_value=0x7F, required=False)
    i_param = serializers.IntegerField(min_value=0, max_value=0xFF, required=False)
    sequence_counter = serializers.IntegerField(
        min_value=0, max_value=0xFFFFFF, required=False, allow_null=True
    )
    wrapped_isd_keys = serializers.CharField(max_length=handover.MAX_WRAPPED_TEXT, required=False)
    casd_public_key = serializers.CharField(
        max_length=handover.MAX_PEM_CHARS, required=False, allow_blank=True
    )
    device_manufacturer = serializers.CharField(max_length=50, required=False, allow_blank=True)
    device_serial = serializers.CharField(max_length=64, required=False, allow_blank=True)


class SupplyBatchIn(StrictSerializer):
    issuer = serializers.SlugField(max_length=50)
    secure_elements = serializers.ListField(child=serializers.JSONField(), allow_empty=False)


def _supplied_csv_row(record: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {k: v for k, v in record.items() if v != ""}
    for k in ("kvn", "i_param", "sequence_counter"):
        if k in row:
            row[k] = batch.csv_int(row[k])
    return row


SUPPLY_BATCH = batch.BatchFormat(
    list_key="secure_elements",
    columns=BATCH_COLUMNS + ("kind",),
    required_columns=("serial", "isd_aid"),  # an SE row also needs kvn, wrapped_isd_keys
    from_csv=_supplied_csv_row,
)


class SupplyBatchView(OrgScopedAPIView):
    """``POST supply-batches/``: an SE supplier uploads SEs it made for an SE issuer that named it.

    JSON ``{"issuer": "<sei>", "secure_elements": [rows]}``, or multipart with the fields
    ``issuer`` and ``file`` (CSV with the columns of ``gp.card.manufacture.BATCH_COLUMNS``, or the
    JSON the manufacturing CLI prints). The per-row report of the other batches, each created row
    with ``casd`` (certified, uncertified and why, or none). 404 for an issuer that did not name
    the supplier with a ``se.supply`` mandate.
    """

    write_action = Action.DEVICES_MANAGE

    @extend_schema(request=SupplyBatchIn, responses={200: dict})
    def post(self, request: Request, org: str) -> Response:
        if batch.too_large_body(request.META.get("CONTENT_LENGTH")):
            raise batch.BatchTooLarge(
                f"At most {batch.MAX_BATCH_BYTES // (1024 * 1024)} MiB per batch; split it."
            )
        if (request.content_type or "").startswith("multipart/form-data"):
            issuer = request.data.get("issuer")
            if not isinstance(issuer, str) or not issuer:
                raise batch.BatchInvalid(
                    "Name the SE issuer in the field 'issuer'.", fields={"issuer": ["Missing."]}
                )
            actor = handover.supply_mandate(actor=self.actor, issuer_slug=issuer)
            rows = batch.rows_from_upload(request.FILES.get("file"), SUPPLY_BATCH)
        else:
            ser = SupplyBatchIn(data=request.data)
            ser.is_valid(raise_exception=True)
            actor = handover.supply_mandate(actor=self.actor, issuer_slug=ser.validated_data["issuer"])
            rows = batch.check_row_count(ser.validated_data["secure_elements"])
        casd: dict[str, Any] = {}

        def handle(data: dict[str, Any]) -> Any:
            done = handover.supplied_secure_element_enrol(actor=actor, **data)
            casd[str(done.pk)] = done.casd
            return done

        report = batch.run_batch(rows, SuppliedSecureElementIn, handle)
        for entry in report:
            if "id" in entry:
                entry["casd"] = casd.get(entry["id"])
        summary = batch.report_summary(report)
        if not summary["created"]:
            raise batch.BatchInvalid(
                f"No row of the batch was valid ({summary['failed']} refused); see the report in fields.rows.",
                fields={"rows": report},
            )
        summary["issuer"] = actor.subject.slug
        return Response(summary)


def import_key_data(key: Any) -> dict[str, Any]:
    return {
        "fingerprint": key.fingerprint,
        "public_key": handover.import_key_pem(key),
        "status": key.status,
        "created_at": key.created_at,
        "superseded_at": key.superseded_at,
        "retired_at": key.retired_at,
    }


class ImportKeyListView(OrgScopedAPIView):
    """``GET import-keys/``: the SE issuer's import keys (public halves, states). ``POST``: rotate —
    a new current key; the previous one keeps opening batches in flight until it is retired."""

    write_action = Action.KEYS_MANAGE

    @extend_schema(responses={200: dict})
    def get(self, request: Request, org: str) -> Response:
        return Response({"results": [import_key_data(k) for k in handover.import_keys_of(self.actor)]})

    @extend_schema(request=NoInput, responses={201: dict})
    def post(self, request: Request, org: str) -> Response:
        NoInput(data=request.data).is_valid(raise_exception=True)
        key = handover.import_key_rotate(actor=self.actor)
        return Response(import_key_data(key), status=status.HTTP_201_CREATED)


class ImportKeyRetireIn(StrictSerializer):
    fingerprint = serializers.RegexField(r"^[0-9A-Fa-f]{64}$", max_length=64)


class ImportKeyRetireView(OrgScopedAPIView):
    """``POST import-keys/retire/`` {fingerprint}: destroy a retiring import key's private key."""

    write_action = Action.KEYS_MANAGE

    @extend_schema(request=ImportKeyRetireIn, responses={200: dict})
    def post(self, request: Request, org: str) -> Response:
        ser = ImportKeyRetireIn(data=request.data)
        ser.is_valid(raise_exception=True)
        key = handover.import_key_retire(actor=self.actor, fingerprint=ser.validated_data["fingerprint"])
        return Response(import_key_data(key))


class PublishedImportKeyView(APIView):
    """``GET /api/v1/import-keys/<issuer>/``: an SE issuer's current import key, for its suppliers
    to wrap ISD keys to (a public key: any authenticated caller may read it)."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, issuer: str) -> Response:
        key = handover.published_import_key(issuer)
        return Response(
            {
                "issuer": issuer,
                "fingerprint": key.fingerprint,
                "public_key": handover.import_key_pem(key),
                "created_at": key.created_at,
            }
        )
