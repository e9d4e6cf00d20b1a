"""Server-rendered pages: the base view every tenant page derives from, and the portal's own pages
(home with the organisation switcher, the dashboard, the audit log).

``OrgScopedView`` resolves ``self.actor`` from the URL (``/o/<org>/…``) and an explicit
``?on_behalf_of=<grantor>`` in ``dispatch()``, before any handler runs, and checks the page's
``action``; so no handler can forget whose data it shows. Domain errors become pages with the
status they carry: "not yours" is a 404, exactly like "does not exist".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views import View

from audit.models import AuditEvent, AuditTag
from devices import selectors as device_selectors
from devices.models import SecureElement, SecurityDomain
from keys import rotation as key_rotation
from portal.errors import DomainError, ForbiddenError, NotFoundError
from tenants.access import Action, Actor, memberships_of, require, resolve_actor, visible_to
from tenants.models import Consent, Contract, Mandate, Membership
from tenants.selectors import organisation_slugs


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def error_page(request: HttpRequest, status: int, message: str, title: str = "") -> HttpResponse:
    titles = {400: "Check your input", 403: "Not allowed", 404: "Not found", 409: "Conflict", 410: "Gone"}
    return render(
        request,
        "error.html",
        {"status": status, "title": title or titles.get(status, "Error"), "message": message},
        status=status,
    )


class OrgScopedView(View):
    """Base of every ``/o/<org>/…`` page.

    Anonymous users are sent to the login page. For everyone else the acting organisation (and
    the mandator, when ``on_behalf_of`` is given in the query string or the form) is resolved
    before any handler; a stranger gets 404, a member whose role is too weak 403.
    """

    action: Action = Action.ORG_VIEW
    actor: Actor

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        behalf = (request.GET.get("on_behalf_of") or request.POST.get("on_behalf_of") or "").strip()
        try:
            self.actor = resolve_actor(request.user, kwargs["org"], behalf or None)
            require(self.actor, self.action)
            return super().dispatch(request, *args, **kwargs)
        except NotFoundError:
            raise Http404("Not found.") from None
        except ForbiddenError as exc:
            raise PermissionDenied(exc.message) from None
        except DomainError as exc:
            # A handler that let a domain error through still answers with its status, not a 500.
            return error_page(request, exc.status, exc.message)

    # --- helpers for handlers and templates -----------------------------------------------

    @property
    def behalf_params(self) -> dict[str, str]:
        return {"on_behalf_of": self.actor.on_behalf_of.slug} if self.actor.on_behalf_of else {}

    def query(self, **params: Any) -> str:
        """A query string that keeps acting on behalf (and any given parameters)."""
        merged = {**self.behalf_params, **{k: v for k, v in params.items() if v not in (None, "")}}
        return "?" + urlencode(merged) if merged else ""

    def base_context(self) -> dict[str, Any]:
        actor = self.actor
        return {
            "actor": actor,
            "org": actor.org,
            "subject": actor.subject,
            "behalf_qs": self.query(),
            "can": {a.name.lower(): actor.can(a) for a in Action},
        }

    def render_page(self, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
        return render(self.request, template, {**self.base_context(), **context}, status=status)

    def redirect_here(self, url: str) -> HttpResponse:
        return redirect(url + self.query())


# --- platform pages ----------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    """Django's login page; a wrong password answers 400, like every other rejected form."""

    redirect_authenticated_user = True

    def form_invalid(self, form: Any) -> HttpResponse:
        return self.render_to_response(self.get_context_data(form=form), status=400)


class HomeView(View):
    """The organisation switcher; straight to the dashboard when there is only one organisation."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        memberships = list(memberships_of(request.user).order_by("org__name"))
        if len(memberships) == 1 and not request.user.is_staff:
            return redirect("org-dashboard", org=memberships[0].org.slug)
        return render(request, "portal/home.html", {"memberships": memberships})


# --- dashboard and audit -----------------------------------------------------------------------


class DashboardView(OrgScopedView):
    action = Action.ORG_VIEW

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        actor = self.actor
        subject = actor.subject
        counts: list[tuple[str, int, str]] = []
        devices: list[Any] = []
        if actor.can(Action.DEVICES_VIEW):
            device_qs = device_selectors.device_list(actor=actor)
            counts += [
                ("Devices", device_qs.count(), "org-devices"),
                ("Secure elements", visible_to(SecureElement, actor, Action.DEVICES_VIEW).count(), ""),
                ("Security domains", visible_to(SecurityDomain, actor, Action.DEVICES_VIEW).count(), ""),
                ("Key sets to rotate", key_rotation.keysets_to_rotate_count(actor), ""),
            ]
            devices = list(device_qs[:8])
        if actor.can(Action.MEMBERS_VIEW):
            counts.append(
                ("Members", visible_to(Membership, actor, Action.MEMBERS_VIEW).count(), "org-members")
            )
        mandates_received: list[Mandate] = []
        if actor.can(Action.MANDATES_VIEW):
            active = visible_to(Mandate, actor, Action.MANDATES_VIEW).filter(Mandate.active_q())
            mandates_received = list(active.filter(grantee=subject).select_related("grantor"))
            counts += [
                ("Mandates given", active.filter(grantor=subject).count(), "org-mandates"),
                ("Mandates received", len(mandates_received), "org-mandates"),
            ]
        if actor.can(Action.CONTRACTS_VIEW):
            counts.append(("Contracts", visible_to(Contract, actor, Action.CONTRACTS_VIEW).count(), ""))
        if actor.can(Action.CONSENTS_VIEW):
            consents = visible_to(Consent, actor, Action.CONSENTS_VIEW).filter(Consent.active_q())
            counts.append(("Consents", consents.count(), "org-consents"))
        events: list[AuditEvent] = []
        if actor.can(Action.AUDIT_VIEW):
            events = list(visible_to(AuditEvent, actor, Action.AUDIT_VIEW).order_by("-seq")[:10])
        return self.render_page(
            "portal/dashboard.html",
            {
                "roles": subject.role_labels(),
                "counts": counts,
                "devices": devices,
                "events": events,
                "mandates_received": mandates_received,
                # Live events follow the acting organisation's own group; on someone's behalf the
                # page would mix two organisations' streams, so it stays static.
                "live": actor.on_behalf_of is None and actor.can(Action.AUDIT_VIEW),
            },
        )


class AuditView(OrgScopedView):
    action = Action.AUDIT_VIEW
    page_size = 25

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        qs = visible_to(AuditEvent, self.actor, Action.AUDIT_VIEW).order_by("-seq")
        tag = request.GET.get("tag", "")
        if tag and tag not in AuditTag.values:
            return self.render_page(
                "portal/audit.html",
                {**self._empty(), "error": f"Unknown event type '{tag[:64]}'; pick one from the list."},
                status=400,
            )
        if tag:
            qs = qs.filter(tag=tag)
        page = Paginator(qs, self.page_size).get_page(request.GET.get("page"))
        events = list(page.object_list)
        slugs = organisation_slugs(
            ids=[e.acting_org_id for e in events] + [e.on_behalf_of_id for e in events]
        )
        rows = [(e, slugs.get(e.acting_org_id, ""), slugs.get(e.on_behalf_of_id, "")) for e in events]
        return self.render_page(
            "portal/audit.html",
            {
                "page": page,
                "rows": rows,
                "tag": tag,
                "tags": AuditTag.choices,
                "prev_qs": self.query(tag=tag, page=page.previous_page_number())
                if page.has_previous()
                else "",
                "next_qs": self.query(tag=tag, page=page.next_page_number()) if page.has_next() else "",
            },
        )

    def _empty(self) -> dict[str, Any]:
        return {"page": None, "rows": [], "tag": "", "tags": AuditTag.choices}


async def healthz(request: HttpRequest) -> JsonResponse:
    """``GET /healthz``: the process answers (no database, no cache) — for load balancers, and the
    bare-view ceiling ``bench/poll.py`` compares the agent endpoint with."""
    return JsonResponse({"ok": True})
