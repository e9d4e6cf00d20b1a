"""Input forms of the tenants pages. They parse and check shape only; the services decide."""

from __future__ import annotations

import re
from typing import Any

from django import forms

from tenants.models import SLUG_RE, MandateAction, MemberRole, Organisation, OrgRole
from tenants.selectors import organisation_active_by_slug


def _device_kinds() -> list[tuple[str, str]]:
    from devices.models import DeviceKind  # devices depends on tenants; import at call time

    return list(DeviceKind.choices)


class InvitationForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=MemberRole.choices, initial=MemberRole.OPERATOR)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=MemberRole.choices)


class MandateGrantForm(forms.Form):
    grantee = forms.CharField(
        max_length=50, label="Grantee", help_text="The other organisation's short name, e.g. trustsm."
    )
    actions = forms.MultipleChoiceField(choices=MandateAction.choices, widget=forms.CheckboxSelectMultiple)
    scope_issuer = forms.CharField(
        max_length=50, required=False, label="Only SEs issued by", help_text="An issuer's short name."
    )
    scope_device_kinds = forms.MultipleChoiceField(
        choices=_device_kinds, required=False, widget=forms.CheckboxSelectMultiple, label="Only device kinds"
    )
    scope_serials = forms.CharField(
        required=False,
        max_length=200_000,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Only device serials",
        help_text="One per line or separated by commas.",
    )
    valid_until = forms.DateTimeField(
        required=False,
        label="Valid until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )

    def clean_grantee(self) -> Organisation:
        slug = self.cleaned_data["grantee"].strip().lower()
        org = organisation_active_by_slug(slug=slug)
        if org is None:
            raise forms.ValidationError(f"No active organisation has the short name '{slug}'.")
        return org

    def scope(self) -> dict[str, Any]:
        data = self.cleaned_data
        scope: dict[str, Any] = {}
        if data.get("scope_issuer"):
            scope["issuer"] = data["scope_issuer"].strip()
        if data.get("scope_device_kinds"):
            scope["device_kinds"] = list(data["scope_device_kinds"])
        serials = [s for s in re.split(r"[\s,;]+", data.get("scope_serials") or "") if s]
        if serials:
            scope["serials"] = serials
        return scope


class ApplicationForm(forms.Form):
    name = forms.CharField(max_length=120, label="Organisation name")
    slug = forms.CharField(
        max_length=50,
        label="Short name",
        help_text="Lowercase letters, digits and inner hyphens; used in addresses, e.g. grid-operator.",
    )
    roles = forms.MultipleChoiceField(
        choices=OrgRole.choices, widget=forms.CheckboxSelectMultiple, label="Roles you will hold"
    )
    contact_name = forms.CharField(max_length=120, label="Contact person")
    contact_email = forms.EmailField(max_length=254, label="Contact email")
    note = forms.CharField(
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Anything we should know",
    )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"].strip()
        if not re.match(SLUG_RE, slug):
            raise forms.ValidationError("Use 1–50 lowercase letters, digits and inner hyphens.")
        return slug


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False, widget=forms.TextInput())


class AccountForm(forms.Form):
    """Creating an account while accepting an invitation."""

    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), max_length=200)


def apply_domain_error(form: forms.Form, fields: dict[str, Any], message: str) -> None:
    """Show a service's error on the form: on the fields it names when the form has them."""
    placed = False
    for name in fields:
        if name in form.fields:
            form.add_error(name, message)
            placed = True
            break
    if not placed:
        form.add_error(None, message)
