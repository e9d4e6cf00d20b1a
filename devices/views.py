"""Pages of the devices app: the devices an organisation may see, one device's hardware (with key
sets as KCVs), and enrolment: register, batch upload, suspend/reactivate."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from devices import api as device_api
from devices import batch, selectors, services
from devices import forms as device_forms
from devices import serializers as device_serializers
from devices.models import Device, DeviceKind
from jobs.views import device_jobs_context
from keys import rotation
from keys import selectors as key_selectors
from portal.errors import DomainError, ForbiddenError
from portal.views import OrgScopedView
from tenants.access import Action, get_visible, require
from tenants.models import OrgRole


class DeviceListView(OrgScopedView):
    action = Action.DEVICES_VIEW
    page_size = 50

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        qs = selectors.device_list(actor=self.actor).prefetch_related("secure_elements__issuer")
        kind = request.GET.get("kind", "")
        if kind in DeviceKind.values:
            qs = qs.filter(kind=kind)
        else:
            kind = ""
        page = Paginator(qs, self.page_size).get_page(request.GET.get("page"))
        return self.render_page(
            "devices/list.html",
            {
                "page": page,
                "kind": kind,
                "kinds": DeviceKind.choices,
                "prev_qs": self.query(kind=kind, page=page.previous_page_number())
                if page.has_previous()
                else "",
                "next_qs": self.query(kind=kind, page=page.next_page_number()) if page.has_next() else "",
            },
        )


class DeviceDetailView(OrgScopedView):
    """One device, its secure element(s) and the security domain tree — only the SDs the actor
    may see (providers never see each other's SDs)."""

    action = Action.DEVICES_VIEW

    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        ses, sds_by_se = selectors.device_hardware(actor=self.actor, device=device)
        key_sets = key_selectors.keysets_by_sd(
            self.actor, [sd.pk for sds in sds_by_se.values() for sd in sds]
        )
        hardware = [
            (
                se,
                [
                    (depth, sd, rotation.annotate(key_sets.get(sd.pk, []), device.end_of_service))
                    for depth, sd in selectors.sd_tree(sds_by_se.get(se.pk, []))
                ],
            )
            for se in ses
        ]
        return self.render_page(
            "devices/detail.html",
            {
                "device": device,
                "hardware": hardware,
                "may_suspend": self.actor.on_behalf_of is None
                and device.manufacturer_id == self.actor.org.pk
                and self.actor.can(Action.DEVICES_MANAGE),
                **device_jobs_context(self.actor, device),
            },
        )


# --- enrolment pages -------------------------------------------------------------------------------


class _EnrolPage(OrgScopedView):
    """A form page of enrolment. Anyone who may see the organisation's devices sees the page; only a
    member who may manage devices, acting for itself with the right organisation role, gets the
    form (posting without it answers exactly as the API does: 404 on behalf, 403 otherwise)."""

    action = Action.DEVICES_VIEW
    form_class: type[forms.Form] = forms.Form
    heading = ""
    intro = ""
    submit = "Register"
    role = OrgRole.DEVICE_MANUFACTURER
    multipart = False

    def allowed(self) -> bool:
        actor = self.actor
        return (
            actor.on_behalf_of is None and actor.can(Action.DEVICES_MANAGE) and actor.org.has_role(self.role)
        )

    def page(self, form: forms.Form, status: int = 200, **extra: Any) -> HttpResponse:
        return self.render_page(
            "devices/register.html",
            {
                "form": form,
                "heading": self.heading,
                "intro": self.intro,
                "submit": self.submit,
                "multipart": self.multipart,
                "allowed": self.allowed(),
                "not_allowed": f"Only a {OrgRole(self.role).label.lower()}'s members who manage devices "
                "use this page, for their own organisation.",
                **extra,
            },
            status=status,
        )

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.page(self.form_class())

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        require(self.actor, Action.DEVICES_MANAGE)
        if not self.allowed():
            raise ForbiddenError(f"Only a {OrgRole(self.role).label.lower()} uses this page.")
        form = self.form_class(request.POST, request.FILES)
        if not form.is_valid():
            return self.page(form, status=400)
        try:
            return self.handle(form)
        except DomainError as exc:
            return self.page(form, status=exc.status, error=exc.message)

    def handle(self, form: forms.Form) -> HttpResponse:
        raise NotImplementedError


class DeviceRegisterView(_EnrolPage):
    form_class = device_forms.DeviceRegisterForm
    heading = "Register a device"
    intro = "Enrol a device you make with its identity key; name its SE to pair it once the issuer names the device too."

    def handle(self, form: forms.Form) -> HttpResponse:
        data = {k: v for k, v in form.cleaned_data.items() if v not in ("", None)}
        device = device_api.device_from_row(self.actor, data)
        return self.redirect_here(reverse("org-device", kwargs={"org": self.actor.org.slug, "pk": device.pk}))


class SecureElementRegisterView(_EnrolPage):
    form_class = device_forms.SecureElementRegisterForm
    heading = "Register a secure element"
    intro = "Record an SE you issue and import its ISD keys into your vault (only key check values are shown afterwards), or a TEE (no ISD keys)."
    role = OrgRole.SE_ISSUER

    def handle(self, form: forms.Form) -> HttpResponse:
        d = form.cleaned_data
        row: dict[str, Any] = {
            "serial": d["serial"],
            "kind": d["kind"],
            "cplc": d["cplc"],
            "isd_aid": d["isd_aid"],
        }
        if d["enc"] or d["mac"] or d["dek"]:
            row["isd_keys"] = {"enc": d["enc"], "mac": d["mac"], "dek": d["dek"]}
        for name in ("kvn", "sequence_counter"):
            if d[name] is not None:
                row[name] = d[name]
        # the form pre-fills i_param's SE default; for a TEE only a value the issuer changed counts
        if d["i_param"] is not None and (d["kind"] != "tee" or d["i_param"] != 0x70):
            row["i_param"] = d["i_param"]
        if d["device_manufacturer"] or d["device_serial"]:
            row["device"] = {"manufacturer": d["device_manufacturer"], "serial": d["device_serial"]}
        enrolment = device_api.secure_element_from_row(self.actor, row)
        ks = enrolment.keyset
        paired = f" and paired with device {enrolment.device.serial}" if enrolment.device else ""
        if ks is None:
            notice = f"TEE {enrolment.secure_element.serial} registered{paired} (a TEE has no ISD key set)."
        else:
            notice = (
                f"Secure element {enrolment.secure_element.serial} registered{paired}; ISD key set KVN "
                f"{ks.kvn:#04x} imported (KCV ENC {ks.kcv_enc}, MAC {ks.kcv_mac}, DEK {ks.kcv_dek})."
            )
        return self.page(self.form_class(), notice=notice)


class _BatchPage(_EnrolPage):
    form_class = device_forms.BatchUploadForm
    submit = "Upload"
    multipart = True
    fmt: batch.BatchFormat
    row_serializer: Any

    def handle(self, form: forms.Form) -> HttpResponse:
        rows = batch.rows_from_upload(form.cleaned_data["file"], self.fmt)
        report = batch.report_summary(batch.run_batch(rows, self.row_serializer, self.create))
        return self.page(self.form_class(), status=200 if report["created"] else 400, report=report)

    def create(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError


class DeviceBatchView(_BatchPage):
    heading = "Upload devices"
    intro = (
        "CSV columns: serial, kind, identity_public_key, key_id, se_issuer, se_serial (or a JSON list of the "
        "same objects). Each valid row is created; each invalid one is reported and nothing of it is written."
    )
    fmt = device_api.DEVICE_BATCH
    row_serializer = device_serializers.DeviceIn

    def create(self, data: dict[str, Any]) -> Any:
        return device_api.device_from_row(self.actor, data)


class SecureElementBatchView(_BatchPage):
    heading = "Upload secure elements"
    intro = (
        "CSV columns: serial, kind, cplc, isd_aid, enc, mac, dek, kvn, i_param, sequence_counter, "
        "device_manufacturer, device_serial (or a JSON list as the API takes). Keys go to your vault; "
        "the report shows no key material."
    )
    role = OrgRole.SE_ISSUER
    fmt = device_api.SE_BATCH
    row_serializer = device_serializers.SecureElementIn

    def create(self, data: dict[str, Any]) -> Any:
        return device_api.Created(device_api.secure_element_from_row(self.actor, data))


class _DeviceStatusPage(OrgScopedView):
    action = Action.DEVICES_VIEW
    change: Any = None

    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        require(self.actor, Action.DEVICES_MANAGE)
        device = get_visible(Device, self.actor, Action.DEVICES_VIEW, pk=pk)
        type(self).change(actor=self.actor, device=device)
        return self.redirect_here(reverse("org-device", kwargs={"org": self.actor.org.slug, "pk": device.pk}))


class DeviceSuspendView(_DeviceStatusPage):
    change = staticmethod(services.device_suspend)


class DeviceReactivateView(_DeviceStatusPage):
    change = staticmethod(services.device_reactivate)
