"""The "Request a job" form of the device page. It parses shape only (which fields a kind uses, hex
written with spaces or lowercase); ``jobs.services.job_request`` decides what is valid and allowed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from django import forms

from jobs.compiler.demo_app import DEMO_INSTANCE_AID as _DEMO_INSTANCE
from jobs.models import JobKind, ScriptMode
from jobs.services import CARD_WIDE_PRIVILEGES, PRIVILEGE_NAMES

CREATE = JobKind.CREATE_SECURITY_DOMAIN
APPS = (JobKind.INSTALL_APPLICATION, JobKind.PERSONALIZE_APPLICATION, JobKind.DELETE_APPLICATION)

# Which job kinds read each parameter field (the page shows a field only for these kinds).
FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "aid": (CREATE, JobKind.DELETE_SECURITY_DOMAIN, JobKind.LOCK, JobKind.UNLOCK),
    "owner": (CREATE,),
    "privileges": (CREATE,),
    "sd": (JobKind.ROTATE_KEYS, JobKind.READ_STATUS, *APPS),
    "key_length": (CREATE, JobKind.ROTATE_KEYS),
    "instance_aid": APPS,
    "dgis": (JobKind.PERSONALIZE_APPLICATION,),
}
# Form fields named differently from the service parameter they fill (``data`` is a Form attribute).
PARAM_OF_FIELD = {"dgis": "data"}
DEFAULT_PRIVILEGES = ["security_domain", "authorized_management"]
DEMO_INSTANCE_AID = bytes(_DEMO_INSTANCE).hex().upper()


def _privilege_choices() -> list[tuple[str, str]]:
    # Card-wide privileges stay with the ISD (the service refuses them); the form does not offer them.
    names = sorted(PRIVILEGE_NAMES - CARD_WIDE_PRIVILEGES)
    return [(n, n.replace("_", " ").capitalize()) for n in names]


def _hex(value: str) -> str:
    return re.sub(r"[\s:]", "", value or "").upper()


# Kinds whose parameters are a provider's own bytes (a key-loading package, an SCP03 script): built by
# its tooling and sent through the API, never typed into a form.
API_ONLY_KINDS = (JobKind.LOAD_KEYS_CONFIDENTIAL, JobKind.RUN_SCRIPT)


class JobRequestForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[c for c in JobKind.choices if c[0] not in API_ONLY_KINDS],
        initial=JobKind.READ_STATUS,
        label="Job",
    )
    mode = forms.ChoiceField(
        choices=ScriptMode.choices,
        initial=ScriptMode.PRECOMPUTED,
        label="Script mode",
        help_text="Precomputed: the whole script goes in one wake-up. Interactive: the device answers "
        "the card's challenge first (it must be online).",
    )
    aid = forms.CharField(
        max_length=64,
        required=False,
        label="Security domain AID",
        help_text="5–16 bytes in hex, e.g. A0000001515350AA01.",
    )
    owner = forms.CharField(
        max_length=50,
        required=False,
        label="Owner organisation",
        help_text="The short name of the organisation the new security domain belongs to.",
    )
    privileges = forms.MultipleChoiceField(
        choices=_privilege_choices,
        required=False,
        initial=DEFAULT_PRIVILEGES,
        widget=forms.CheckboxSelectMultiple,
        label="Privileges",
    )
    sd = forms.CharField(
        max_length=64,
        required=False,
        label="Security domain AID",
        help_text="Leave empty for the Issuer Security Domain.",
    )
    key_length = forms.TypedChoiceField(
        choices=[
            ("", "As now (rotation) · AES-128 (new SD)"),
            (16, "AES-128"),
            (24, "AES-192"),
            (32, "AES-256"),
        ],
        coerce=int,
        empty_value=None,
        required=False,
        initial="",
        label="Key length",
        help_text="A rotation keeps the current length or moves to a longer one, never shorter.",
    )
    instance_aid = forms.CharField(
        max_length=64,
        required=False,
        initial=DEMO_INSTANCE_AID,
        label="Application instance AID",
        help_text="The demo meter applet's instance by default.",
    )
    dgis = forms.CharField(
        max_length=20_000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Personalisation data",
        help_text="One DGI per line: 4 hex digits, a colon or space, then the value in hex.",
    )

    def __init__(self, *args: Any, owner: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if owner:
            self.fields["owner"].initial = owner

    def rows(self) -> Iterator[tuple[forms.BoundField, str]]:
        """Each field with the kinds it applies to ("" = every kind), for the template."""
        for name in self.fields:
            yield self[name], " ".join(FIELD_KINDS.get(name, ()))

    def clean_dgis(self) -> list[dict[str, str]] | None:
        text = self.cleaned_data.get("dgis") or ""
        items = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = re.split(r"[\s:=]+", line.strip(), maxsplit=1)
            if len(parts) != 2:
                raise forms.ValidationError(f"Line {n}: write the DGI, then its value (e.g. 0101: 3F00).")
            items.append({"dgi": _hex(parts[0]), "value": _hex(parts[1])})
        return items or None

    def params(self) -> dict[str, Any]:
        """The parameters of the chosen kind only; empty optional fields are left to the service's
        defaults (the ISD for ``sd``)."""
        data = self.cleaned_data
        kind = data["kind"]
        params: dict[str, Any] = {}
        for name, kinds in FIELD_KINDS.items():
            if kind not in kinds:
                continue
            value = data.get(name)
            if name in ("aid", "sd", "instance_aid"):
                value = _hex(value or "")
            elif name == "owner":
                value = (value or "").strip().lower()
            if name in ("sd", "key_length") and value in ("", None):
                continue  # the service's default: the ISD; the current (or AES-128) key length
            if name == "dgis" and value is None:
                value = []
            if name == "privileges":
                value = list(value or [])
            params[PARAM_OF_FIELD.get(name, name)] = value
        return params

    def fields_named(self, params: dict[str, Any]) -> dict[str, Any]:
        """A service error's parameter names as this form's field names."""
        fields_of = {param: name for name, param in PARAM_OF_FIELD.items()}
        return {fields_of.get(k, k): v for k, v in params.items()}
