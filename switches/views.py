"""Pages of contracts and provider switches (issue 6 item 2), made for a non-technical person on a
phone: the subscriber's contracts in plain words, "Switch provider", and the switch as a checklist
that updates live.

Adapters only: resolve through the access rules (404 for what is not yours), call
``switches.services.switch_request``, redirect. A refused request is shown on the page with the
status the service gives it (400, 403, 409), never as a 500. What a switch shows depends on the
viewer exactly as in the API (``switches.access.view_of``): the new provider never sees the old
one; the old provider sees only that it lost the device, once the switch has completed.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from jobs.models import JobState
from portal.errors import DomainError
from portal.views import OrgScopedView, is_htmx
from switches import selectors
from switches.access import view_of
from switches.choices import eligible_providers, switchable_contracts
from switches.forms import SwitchForm
from switches.models import ACTIVE_SWITCH_STATES, Switch, SwitchState
from switches.services import forward_steps
from tenants.access import Action, Actor, get_visible, visible_to
from tenants.models import Consent, ConsentStatus, Contract, ContractStatus, Organisation

# --- reads for the pages ----------------------------------------------------------------------


def _contracts(actor: Actor) -> Any:
    return visible_to(Contract, actor, Action.CONTRACTS_VIEW).select_related(
        "provider", "subscriber", "device", "connectivity_payer"
    )


def running_switch(actor: Actor, contract: Contract) -> Switch | None:
    """The switch the actor sees running on the contract's device, if any."""
    return (
        selectors.switch_list(actor=actor)
        .filter(device_id=contract.device_id, state__in=ACTIVE_SWITCH_STATES)
        .first()
    )


def contract_terms(contract: Contract, viewer: Organisation) -> list[tuple[str, str]]:
    """The contract's terms in plain words, as (label, sentence)."""
    you = contract.subscriber_id == viewer.pk
    whose = "You" if you else contract.subscriber.name
    if contract.switch_allowed:
        switch = f"{whose} may move this service to another provider at any time."
    else:
        switch = f"This contract does not let {'you' if you else contract.subscriber.name} change provider."
    notice = (
        f"{contract.notice_days} day{'s' if contract.notice_days != 1 else ''} of notice."
        if contract.notice_days
        else "No notice period."
    )
    payer = contract.connectivity_payer
    if payer is None:
        pays = "Not stated in the contract."
    elif payer.pk == viewer.pk:
        pays = "You pay for the device's network connection."
    else:
        pays = f"{payer.name} pays for the device's network connection."
    terms = [
        ("Provider", contract.provider.name),
        ("Service", contract.service),
        ("Device", contract.device.serial),
        ("Changing provider", switch),
        ("Notice period", notice),
        ("Connectivity", pays),
        ("Status", contract.get_status_display()),
    ]
    if not contract.consent_required:
        terms.append(
            (
                "Consent",
                "The device is leased: its owner assigns the provider, and the provider's work needs no "
                "separate consent. You are told about every change.",
            )
        )
    return terms


# --- a switch as each party sees it -----------------------------------------------------------

_DONE = ("succeeded", "skipped")
_STEP_KIND = {
    "create_sd": "setup",
    "load_keys": "keys",
    "install_app": "app",
    "personalize_app": "app",
    "verify": "check",
    "delete_old": "remove",
    "finish": "done",
}


def switch_view(switch: Switch, viewer: Actor) -> dict[str, Any]:
    """What the page shows of ``switch`` to ``viewer``; never the old provider to the new one,
    never the new provider (nor any step) to the old one."""
    view = view_of(viewer, switch)
    device = switch.device.serial
    if view == "old":
        service = switch.old_contract.service
        return {
            "view": "old",
            "pk": switch.pk,
            "device": device,
            "service": service,
            "state": "lost",
            "state_label": "Lost",
            "active": False,
            "title": f"{service} on device {device}",
            "headline": f"The subscriber moved {service} on device {device} to another provider. "
            "Your security domain and keys were removed from the device and your contract has ended.",
            "steps": [],
            "finished_at": switch.finished_at,
            "error": "",
        }
    new = switch.new_provider.name
    old = switch.old_provider.name if view == "full" else ""
    service = switch.new_contract.service
    active = switch.state in ACTIVE_SWITCH_STATES
    headlines_full = {
        SwitchState.RUNNING: f"Moving {service} to {new}. {old} keeps serving until {new} is ready.",
        SwitchState.AWAITING_KEYS: f"Waiting for {new} to load its keys. {old} keeps serving meanwhile.",
        SwitchState.COMPENSATING: f"Something went wrong, so the change is being undone. {old} keeps serving.",
        SwitchState.COMPLETED: f"Done: {new} now provides {service}.",
        SwitchState.ROLLED_BACK: f"Not switched: nothing changed, {old} keeps serving.",
        SwitchState.FAILED: "This switch needs attention: the undo did not finish. Support has been told.",
    }
    headlines_new = {
        SwitchState.RUNNING: f"{new} is taking over {service} on device {device}.",
        SwitchState.AWAITING_KEYS: f"Waiting for {new}'s key-loading package for its new security domain.",
        SwitchState.COMPENSATING: f"A step failed: {new}'s security domain is being removed again.",
        SwitchState.COMPLETED: f"Done: {new} now provides {service} on device {device}.",
        SwitchState.ROLLED_BACK: f"Not switched: {new}'s security domain was removed again.",
        SwitchState.FAILED: "This switch needs attention: the undo did not finish.",
    }
    headline = (headlines_full if view == "full" else headlines_new)[switch.state]
    error = switch.error_message
    if view == "new" and (switch.step.startswith("delete_old") or error.startswith("delete_old")):
        error = "The previous provider's removal failed; Tessera retries it." if error else ""
    hint, hint_consents = _waiting_hint(switch, viewer, view) if active else ("", False)
    return {
        "view": view,
        "hint": hint,
        "hint_consents": hint_consents,
        "pk": switch.pk,
        "device": device,
        "service": service,
        "state": switch.state,
        "state_label": switch.get_state_display(),
        "active": active,
        "title": f"Switch to {new}",
        "headline": headline,
        "new_provider": new,
        "old_provider": old,
        "steps": checklist(switch, view),
        "finished_at": switch.finished_at,
        "created_at": switch.created_at,
        "initiator": switch.get_initiator_display(),
        "error": error,
        "new_sd_aid": switch.new_sd_aid,
        "keys_mode": switch.get_keys_mode_display(),
    }


def _waiting_hint(switch: Switch, viewer: Actor, view: str) -> tuple[str, bool]:
    """What the switch waits for, said to whoever can act on it: (sentence, link to consents)."""
    new = switch.new_provider.name
    if switch.state == SwitchState.AWAITING_KEYS:
        if view == "new":
            return (
                f"Load your keys into your new security domain {switch.new_sd_aid} with your own tooling "
                "(the provider SDK, docs/provider-sdk.md): Tessera never sees them. The switch goes on "
                "as soon as that key-loading job ends.",
                False,
            )
        return f"{new} loads its own keys; nobody else, not even Tessera, sees them.", False
    job = switch.current_job
    if job is None or job.state != JobState.AWAITING_CONSENT:
        return "", False
    if viewer.subject.pk == switch.subscriber_id:
        asked = (
            visible_to(Consent, viewer, Action.CONSENTS_VIEW)
            .filter(
                device_id=switch.device_id, grantee_id=switch.new_provider_id, status=ConsentStatus.PENDING
            )
            .exists()
        )
        if asked:
            return f"{new} needs your consent to continue: answer it on your Consents page.", True
        return f"{new} needs your consent to continue; its request will appear on your Consents page.", True
    if view == "new":
        return (
            f"Your job waits for the subscriber's consent to your security domain {switch.new_sd_aid}: "
            "ask for it (a consent request) if you have not yet.",
            False,
        )
    return "Waiting for the subscriber's consent.", False


def checklist(switch: Switch, view: str) -> list[dict[str, str]]:
    """The saga as plain steps, each ``done``, ``current``, ``failed`` or ``todo``."""
    new = switch.new_provider.name
    labels = {
        "setup": f"Setting up {new}",
        "keys": "Loading its keys",
        "app": "Installing its application",
        "check": "Checking",
        "remove": f"Removing {switch.old_provider.name}",
        "done": "Done",
    }
    # The saga's own order (services.forward_steps), consecutive steps of one kind as one line.
    groups: list[tuple[str, list[str]]] = []
    for step in forward_steps(switch):
        kind = _STEP_KIND.get(step.partition(":")[0], "check")
        if kind == "done" and view == "full" and not any(k == "remove" for k, _ in groups):
            groups.append(("remove", []))  # nothing of the old provider on the card: still say it
        if kind == "remove" and view != "full":
            continue  # the new provider never hears of the old one
        if groups and groups[-1][0] == kind:
            groups[-1][1].append(step)
        else:
            groups.append((kind, [step]))
    groups = [(labels[k], members) for k, members in groups]

    done = {e["step"] for e in switch.log if e.get("outcome") in _DONE}
    failed = {e["step"] for e in switch.log if e.get("outcome") == "failed"}
    undoing = switch.state in (SwitchState.COMPENSATING, SwitchState.ROLLED_BACK, SwitchState.FAILED)
    out = []
    for label, members in groups:
        if switch.state == SwitchState.COMPLETED or (members and all(m in done for m in members)):
            state = "done"
        elif not members:  # nothing of the old provider to remove: done with the switch
            state = "todo"
        elif undoing and any(m in failed for m in members) and not all(m in done for m in members):
            state = "failed"
        elif switch.state in ACTIVE_SWITCH_STATES and not undoing and switch.step in members:
            state = "current"
        else:
            state = "todo"
        if state == "current" and switch.state == SwitchState.AWAITING_KEYS:
            label = f"Loading its keys: waiting for {new}"
        out.append({"label": label, "state": state})
    if undoing:
        undo_label = "Undoing: removing the new security domain again"
        if switch.state == SwitchState.ROLLED_BACK:
            out.append({"label": "Undone: the device is as before", "state": "done"})
        elif switch.state == SwitchState.COMPENSATING:
            out.append({"label": undo_label, "state": "current"})
        else:
            out.append({"label": undo_label, "state": "failed"})
    return out


# --- contracts --------------------------------------------------------------------------------


class ContractsView(OrgScopedView):
    """``/o/<org>/contracts/``: the subscriber's contracts (and a provider's, with its subscribers)."""

    action = Action.CONTRACTS_VIEW

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        subject = self.actor.subject
        contracts = _contracts(self.actor).order_by("-starts_at")
        mine = list(contracts.filter(subscriber=subject))
        return self.render_page(
            "switches/contracts.html",
            {
                "current": [c for c in mine if c.status in (ContractStatus.ACTIVE, ContractStatus.PENDING)],
                "past": [c for c in mine if c.status not in (ContractStatus.ACTIVE, ContractStatus.PENDING)],
                "served": list(contracts.filter(provider=subject)),
            },
        )


class ContractView(OrgScopedView):
    """``/o/<org>/contracts/<pk>/``: one contract's terms in plain words; "Switch provider" on a
    switchable contract in force; the switches of this contract the viewer may see."""

    action = Action.CONTRACTS_VIEW

    def contract(self, pk: Any) -> Contract:
        return get_visible(Contract, self.actor, Action.CONTRACTS_VIEW, pk=pk)

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        contract = self.contract(pk)
        subject = self.actor.subject
        is_subscriber = contract.subscriber_id == subject.pk
        switches = [
            switch_view(s, self.actor)
            for s in selectors.switch_list(actor=self.actor).filter(
                Q(old_contract=contract) | Q(new_contract=contract)
            )
        ]
        return self.render_page(
            "switches/contract.html",
            {
                "contract": contract,
                "terms": contract_terms(contract, subject),
                "is_subscriber": is_subscriber,
                "may_switch": is_subscriber
                and contract.switch_allowed
                and contract.status == ContractStatus.ACTIVE
                and self.actor.can(Action.CONSENTS_MANAGE),
                "running": running_switch(self.actor, contract),
                "switches": switches,
            },
        )


# --- starting a switch ------------------------------------------------------------------------


class _SwitchStart(OrgScopedView):
    """Shared by the subscriber's "Switch provider" (one contract) and the general form."""

    action = Action.CONTRACTS_VIEW

    def start(self, form: SwitchForm, contracts: dict[str, Contract]) -> Switch | DomainError:
        contract = contracts[form.cleaned_data["contract"]]
        try:
            return _request_for_contract(
                actor=self.actor,
                contract=contract,
                new_provider=form.cleaned_data["new_provider"],
                keys_mode=form.cleaned_data["keys_mode"],
            )
        except DomainError as exc:
            return exc

    def started(self, switch: Switch) -> HttpResponse:
        messages.success(
            self.request,
            f"Your switch to {switch.new_provider.name} has started. This page shows each step as it happens.",
        )
        return redirect("org-switch", org=self.actor.org.slug, pk=switch.pk)


def _request_for_contract(*, actor: Actor, contract: Contract, new_provider: str, keys_mode: str) -> Switch:
    """``switches.services.switch_request`` for a contract the form offered."""
    from switches.services import switch_request

    return switch_request(
        actor=actor,
        device=contract.device,
        new_provider=new_provider,
        service=contract.service,
        keys_mode=keys_mode,
    )


class ContractSwitchView(_SwitchStart):
    """``/o/<org>/contracts/<pk>/switch/``: the subscriber picks a new provider (one screen), reads
    what will happen and confirms (``?to=<provider>``); the POST starts the switch."""

    def contract(self, pk: Any) -> Contract:
        return get_visible(Contract, self.actor, Action.CONTRACTS_VIEW, pk=pk)

    def page(
        self, contract: Contract, *, form: SwitchForm | None = None, error: str = "", status: int = 200
    ) -> HttpResponse:
        providers = eligible_providers(exclude=contract.provider_id)
        chosen = None
        if form is not None and form.is_bound:
            slug = form.data.get("new_provider")
        else:
            slug = self.request.GET.get("to")
        if slug:
            chosen = next((p for p in providers if p.slug == slug), None)
            if chosen is None and not error:
                error, status = "Choose one of the listed providers.", 400
        return self.render_page(
            "switches/contract_switch.html",
            {
                "contract": contract,
                "providers": providers,
                "chosen": chosen,
                "running": running_switch(self.actor, contract),
                "error": error,
            },
            status=status,
        )

    def _forbidden(self, contract: Contract) -> str:
        if contract.subscriber_id != self.actor.subject.pk:
            return "Only the subscriber can change the provider of this contract."
        if contract.status != ContractStatus.ACTIVE:
            return "This contract is not in force, so its provider cannot be changed."
        if not contract.switch_allowed:
            return f"Your contract with {contract.provider.name} does not allow switching provider."
        if not self.actor.can(Action.CONSENTS_MANAGE):
            return "Your role in this organisation does not allow changing providers."
        return ""

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        contract = self.contract(pk)
        reason = self._forbidden(contract)
        if reason:
            messages.info(request, reason)
            return redirect("org-contract", org=org, pk=contract.pk)
        return self.page(contract)

    def post(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        contract = self.contract(pk)
        reason = self._forbidden(contract)
        if reason:
            return self.page(contract, error=reason, status=403)
        providers = eligible_providers(exclude=contract.provider_id)
        form = SwitchForm(
            {**request.POST.dict(), "contract": str(contract.pk)},
            contracts=[(str(contract.pk), contract.service)],
            providers=[(p.slug, p.name) for p in providers],
        )
        if not form.is_valid():
            return self.page(contract, form=form, error=form.first_error(), status=400)
        result = self.start(form, {str(contract.pk): contract})
        if isinstance(result, DomainError):
            return self.page(contract, form=form, error=result.message, status=result.status)
        return self.started(result)


class SwitchNewView(_SwitchStart):
    """``/o/<org>/switches/new/``: the same form for every contract the organisation may switch —
    the SE issuer's way (a leased kit reassigned to another clinic) and the subscriber's."""

    def form(self, data: Any = None) -> tuple[SwitchForm, dict[str, Contract]]:
        contracts = {str(c.pk): c for c in switchable_contracts(self.actor)}
        choices = [
            (k, f"{c.device.serial} · {c.service} · now {c.provider.name}") for k, c in contracts.items()
        ]
        providers = [(p.slug, p.name) for p in eligible_providers()]
        return SwitchForm(data, contracts=choices, providers=providers), contracts

    def page(self, form: SwitchForm, *, error: str = "", status: int = 200) -> HttpResponse:
        return self.render_page(
            "switches/new.html",
            {"form": form, "issuer": self.actor.can(Action.JOBS_REQUEST), "error": error},
            status=status,
        )

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        form, _ = self.form()
        return self.page(form)

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        form, contracts = self.form(request.POST)
        if not form.is_valid():
            return self.page(form, error=form.first_error(), status=400)
        result = self.start(form, contracts)
        if isinstance(result, DomainError):
            return self.page(form, error=result.message, status=result.status)
        return self.started(result)


# --- switches ---------------------------------------------------------------------------------


class SwitchesView(OrgScopedView):
    """``/o/<org>/switches/``: the switches the organisation may see, each shaped for it."""

    action = Action.CONTRACTS_VIEW

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        switches = [switch_view(s, self.actor) for s in selectors.switch_list(actor=self.actor)[:200]]
        return self.render_page(
            "switches/list.html",
            {"switches": switches, "may_start": bool(switchable_contracts(self.actor))},
        )


class SwitchView(OrgScopedView):
    """``/o/<org>/switches/<pk>/``: the switch as a checklist; while it runs the checklist refreshes
    itself (live events, and htmx polling every 2 s as the fallback)."""

    action = Action.CONTRACTS_VIEW

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        switch = selectors.switch_get(actor=self.actor, pk=pk)
        context = {
            "s": switch_view(switch, self.actor),
            "self_url": reverse("org-switch", kwargs={"org": org, "pk": switch.pk}),
            "ws_path": f"/ws/o/{self.actor.org.slug}/events/" if self.actor.can(Action.AUDIT_VIEW) else "",
        }
        if is_htmx(request):
            return self.render_page("switches/_live.html", context)
        return self.render_page("switches/detail.html", context)
