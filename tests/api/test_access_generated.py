"""Generated access tests: every route naming an organisation, as every kind of caller (DESIGN §5 (5)).

The routes come from the URL configuration itself, API and pages alike, so a route added tomorrow
is tested tomorrow. A route whose object parameters the world fixture cannot fill fails
``test_every_org_route_can_be_built`` instead of silently escaping.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from django.shortcuts import resolve_url
from django.test import Client

from tests.conftest import client_for
from tests.support.db import changed_counts, row_counts
from tests.support.objects import OwnerObjects, owner_objects
from tests.support.routes import Route, org_routes

ROUTES = org_routes()
ROUTE_IDS = [str(r) for r in ROUTES]
DETAIL_ROUTES = [r for r in ROUTES if len(r.params) > 1]

# What a mandate of [audit.view, devices.view, sd.create] lets the grantee see on the grantor's
# behalf, by the first path segment after <org>: the organisation itself, its devices and their
# hardware, the jobs on them (jobs.view rides on devices.view), its audit trail. Everything else (members, invitations, mandates, contracts,
# consents…) is never reachable on someone's behalf.
MANDATE_COVERS = {"", "devices", "secure-elements", "security-domains", "jobs", "audit"}

WRITE_METHODS = ("post", "put", "patch", "delete")


@pytest.fixture
def objects(world: Any) -> OwnerObjects:
    return owner_objects(world)


def _client(user: Any, route: Route) -> Any:
    if route.is_api:
        return client_for(user)
    client = Client()
    client.force_login(user)
    return client


def _anonymous(route: Route) -> Any:
    if route.is_api:
        from rest_framework.test import APIClient

        return APIClient()
    return Client()


def _call(client: Any, method: str, url: str, **extra: Any) -> Any:
    if method == "get":
        return client.get(url, **extra)
    return getattr(client, method)(url, data={}, content_type="application/json", **extra)


def _body(resp: Any, *ids: Any) -> str:
    """The response body with the requested ids blanked out, to compare two 404s."""
    text = resp.content.decode(errors="replace")
    for i in ids:
        text = text.replace(str(i), "<id>")
    # CSRF tokens and nonces differ per request; they say nothing about the object.
    return re.sub(r'(csrfmiddlewaretoken" value="|nonce=")[^"]*', r"\1", text)


def test_the_url_configuration_has_org_routes_for_the_api() -> None:
    assert any(r.is_api for r in ROUTES), "no /api/v1/orgs/<org>/ route found: the walker is broken"


def test_every_org_route_can_be_built(world: Any, objects: OwnerObjects) -> None:
    unbuildable = []
    for route in ROUTES:
        if route.regex:
            unbuildable.append(f"{route}: a re_path; use path() so tests can fill <org>")
            continue
        try:
            objects.kwargs_for(route, "owner-sei")
        except LookupError as exc:
            unbuildable.append(str(exc))
    assert not unbuildable, "\n".join(unbuildable)


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_an_anonymous_caller_is_asked_to_authenticate(
    route: Route, world: Any, objects: OwnerObjects
) -> None:
    url = route.path(**objects.kwargs_for(route, "owner-sei"))
    before = row_counts()
    for method in sorted(route.methods):
        resp = _call(_anonymous(route), method, url)
        if route.is_api:
            assert resp.status_code == 401, (method, url, resp.status_code, resp.content[:300])
            assert resp.json()["error"]["code"] == "not_authenticated"
        else:
            assert resp.status_code == 302, (method, url, resp.status_code)
            assert resp["Location"].startswith(resolve_url(settings.LOGIN_URL)), resp["Location"]
    assert not changed_counts(before, row_counts())


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_a_stranger_gets_404_for_every_method(route: Route, world: Any, objects: OwnerObjects) -> None:
    # given the owner's URL, as a member of an unrelated organisation
    url = route.path(**objects.kwargs_for(route, "owner-sei"))
    client = _client(world.stranger_user, route)
    before = row_counts()
    # when it tries every method the route implements, then each answers 404 and nothing is written
    for method in sorted(route.methods):
        resp = _call(client, method, url)
        assert resp.status_code == 404, (method, url, resp.status_code, resp.content[:300])
    assert not changed_counts(before, row_counts())


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_a_stranger_claiming_to_act_for_the_owner_gets_404(
    route: Route, world: Any, objects: OwnerObjects
) -> None:
    url = route.path(**objects.kwargs_for(route, "stranger-sp")) + "?on_behalf_of=owner-sei"
    for method in sorted(route.methods):
        resp = _call(_client(world.stranger_user, route), method, url)
        assert resp.status_code == 404, (method, url, resp.status_code, resp.content[:300])


def _is_redirect_within(resp: Any, org: str) -> bool:
    """A page for a form post (revoke, remove…) may send a plain GET back to a page of the org."""
    return resp.status_code == 302 and resp["Location"].startswith(f"/o/{org}/")


@pytest.mark.parametrize("route", DETAIL_ROUTES, ids=[str(r) for r in DETAIL_ROUTES])
def test_a_stranger_naming_the_owners_object_in_its_own_org_gets_404(
    route: Route, world: Any, objects: OwnerObjects
) -> None:
    url = route.path(**objects.kwargs_for(route, "stranger-sp"))
    client = _client(world.stranger_user, route)
    before = row_counts()
    for method in sorted(route.methods):
        resp = _call(client, method, url)
        if method == "get" and not route.is_api and _is_redirect_within(resp, "stranger-sp"):
            continue
        assert resp.status_code == 404, (method, url, resp.status_code, resp.content[:300])
    assert not changed_counts(before, row_counts())


@pytest.mark.parametrize("route", DETAIL_ROUTES, ids=[str(r) for r in DETAIL_ROUTES])
def test_not_yours_looks_exactly_like_does_not_exist(route: Route, world: Any, objects: OwnerObjects) -> None:
    # given the owner's object and an id that exists nowhere, both named by the stranger
    real = objects.kwargs_for(route, "stranger-sp")
    missing = objects.missing_kwargs_for(route, "stranger-sp")
    ids = [v for k, v in real.items() if k != "org"] + [v for k, v in missing.items() if k != "org"]
    client = _client(world.stranger_user, route)
    statuses = set()
    for method in sorted(route.methods):
        # when
        theirs = _call(client, method, route.path(**real))
        nothing = _call(client, method, route.path(**missing))
        # then the two answers cannot be told apart
        assert theirs.status_code == nothing.status_code, method
        assert _body(theirs, *ids) == _body(nothing, *ids), method
        statuses.add(theirs.status_code)
    assert 404 in statuses


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_an_organisation_nobody_may_see_looks_like_one_that_does_not_exist(
    route: Route, world: Any, objects: OwnerObjects
) -> None:
    client = _client(world.stranger_user, route)
    theirs = client.get(route.path(**objects.kwargs_for(route, "owner-sei")))
    nothing = client.get(route.path(**objects.kwargs_for(route, "no-such-org")))
    assert theirs.status_code == nothing.status_code == 404
    assert _body(theirs, "owner-sei") == _body(nothing, "no-such-org")


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_the_owner_may_read_every_route(route: Route, world: Any, objects: OwnerObjects) -> None:
    url = route.path(**objects.kwargs_for(route, "owner-sei"))
    resp = _client(world.owner_user, route).get(url)
    if "get" in route.methods:
        if not (not route.is_api and _is_redirect_within(resp, "owner-sei")):
            assert resp.status_code == 200, (url, resp.status_code, resp.content[:300])
    else:
        # a write-only route exists for the owner: GET is refused as a method, not hidden
        assert resp.status_code == 405, (url, resp.status_code, resp.content[:300])


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_the_collaborator_on_behalf_sees_exactly_what_the_mandate_covers(
    route: Route, world: Any, objects: OwnerObjects
) -> None:
    # given the collaborator acting for itself on behalf of the owner, naming the owner's objects
    url = route.path(**objects.kwargs_for(route, "collab-tsm")) + "?on_behalf_of=owner-sei"
    client = _client(world.collaborator_user, route)
    covered = route.collection in MANDATE_COVERS
    # when / then
    if "get" in route.methods:
        resp = client.get(url)
        if not (covered and not route.is_api and _is_redirect_within(resp, "collab-tsm")):
            expected = 200 if covered else 404
            assert resp.status_code == expected, (url, resp.status_code, resp.content[:300])
    if not covered:
        before = row_counts()
        for method in sorted(route.methods & set(WRITE_METHODS)):
            resp = _call(client, method, url)
            assert resp.status_code == 404, (method, url, resp.status_code, resp.content[:300])
        assert not changed_counts(before, row_counts())


def test_the_mandate_covers_a_route_of_every_kind_it_names() -> None:
    # Guard against MANDATE_COVERS drifting from the URLs: each covered collection exists.
    collections = {r.collection for r in ROUTES if r.is_api}
    assert MANDATE_COVERS <= collections


def test_on_behalf_lists_show_the_owners_hardware(world: Any, objects: OwnerObjects) -> None:
    client = client_for(world.collaborator_user)
    base = "/api/v1/orgs/collab-tsm/"
    q = "?on_behalf_of=owner-sei"
    assert [d["serial"] for d in client.get(base + "devices/" + q).json()["results"]] == ["MTR-0001"]
    assert [s["serial"] for s in client.get(base + "secure-elements/" + q).json()["results"]] == [
        "0102030405060708"
    ]
    aids = {d["aid"] for d in client.get(base + "security-domains/" + q).json()["results"]}
    assert aids == {world.isd.aid, world.ssd.aid}
    assert "STR-0001" not in str(client.get(base + "devices/" + q).content)


def test_the_collaborator_acting_for_itself_sees_none_of_the_owners_devices(
    world: Any, objects: OwnerObjects
) -> None:
    client = client_for(world.collaborator_user)
    base = "/api/v1/orgs/collab-tsm/"
    for collection in ("devices", "secure-elements", "security-domains"):
        resp = client.get(base + collection + "/")
        assert resp.status_code == 200
        assert resp.json()["results"] == [], collection
    assert client.get(f"{base}devices/{world.device.pk}/").status_code == 404
    assert client.get(f"{base}secure-elements/{world.se.pk}/").status_code == 404
    assert client.get(f"{base}security-domains/{world.ssd.pk}/").status_code == 404


def test_the_owner_lists_only_its_own_devices_never_the_strangers(world: Any) -> None:
    resp = client_for(world.owner_user).get("/api/v1/orgs/owner-sei/devices/")
    assert [d["serial"] for d in resp.json()["results"]] == ["MTR-0001"]
    resp = client_for(world.stranger_user).get("/api/v1/orgs/stranger-sp/devices/")
    assert [d["serial"] for d in resp.json()["results"]] == ["STR-0001"]
