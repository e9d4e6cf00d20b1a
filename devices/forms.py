"""Forms of the enrolment pages. They only parse; the services validate and decide."""

from __future__ import annotations

from django import forms

from devices.models import DeviceKind, SecureElementKind


class DeviceRegisterForm(forms.Form):
    serial = forms.CharField(max_length=64)
    kind = forms.ChoiceField(choices=DeviceKind.choices)
    identity_public_key = forms.CharField(
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="PEM, EC P-256, as `agent init` prints it",
    )
    se_issuer = forms.CharField(max_length=50, required=False, label="SE issuer (short name)")
    se_serial = forms.CharField(max_length=64, required=False, label="SE serial")


class SecureElementRegisterForm(forms.Form):
    serial = forms.CharField(max_length=64)
    kind = forms.ChoiceField(choices=SecureElementKind.choices)
    cplc = forms.CharField(max_length=128, required=False, label="CPLC (hex)")
    isd_aid = forms.CharField(max_length=32, label="ISD AID (hex)")
    # the ISD key set: an SE's (required by the service); a TEE has none (leave them empty)
    enc = forms.CharField(max_length=64, required=False, label="Key-ENC (hex)", widget=forms.PasswordInput)
    mac = forms.CharField(max_length=64, required=False, label="Key-MAC (hex)", widget=forms.PasswordInput)
    dek = forms.CharField(max_length=64, required=False, label="Key-DEK (hex)", widget=forms.PasswordInput)
    kvn = forms.IntegerField(min_value=1, max_value=0x7F, required=False, label="KVN")
    i_param = forms.IntegerField(
        min_value=0, max_value=0xFF, required=False, initial=0x70, label="i parameter"
    )
    sequence_counter = forms.IntegerField(min_value=0, max_value=0xFFFFFF, required=False)
    device_manufacturer = forms.CharField(
        max_length=50, required=False, label="Device manufacturer (short name)"
    )
    device_serial = forms.CharField(max_length=64, required=False)


class BatchUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header row, or JSON; at most 2 MiB and 10,000 rows")
