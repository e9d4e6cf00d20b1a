"""Forms of the provider-switch pages. One form for everyone who may start a switch: the
subscriber (one of its switchable contracts) and the SE issuer (a contract on one of its devices,
e.g. a leased kit reassigned to another clinic). The choices are built per viewer by the view."""

from __future__ import annotations

from typing import Any

from django import forms

from switches.models import KeysMode


class SwitchForm(forms.Form):
    contract = forms.ChoiceField(
        label="Which service",
        error_messages={
            "required": "Choose the service to move.",
            "invalid_choice": "Choose one of the listed services.",
        },
    )
    new_provider = forms.ChoiceField(
        label="New provider",
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose the new provider.",
            "invalid_choice": "Choose one of the listed providers.",
        },
    )
    keys_mode = forms.ChoiceField(
        label="Keys",
        choices=KeysMode.choices,
        initial=KeysMode.CONFIDENTIAL,
        required=False,
        error_messages={"invalid_choice": "Choose how the new provider's keys are loaded."},
    )

    def __init__(
        self,
        *args: Any,
        contracts: list[tuple[str, str]],
        providers: list[tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["contract"].choices = contracts
        self.fields["new_provider"].choices = providers

    def clean_keys_mode(self) -> str:
        return self.cleaned_data.get("keys_mode") or KeysMode.CONFIDENTIAL

    def first_error(self) -> str:
        for errors in self.errors.values():
            if errors:
                return str(errors[0])
        return "Check the form."
