"""The hash-chained audit trail: intact chains verify, any edit, gap or truncation is named."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditChainHead, AuditEvent, AuditTag
from audit.services import GENESIS_HASH, ChainBreak, audit_record, audit_verify_chain, compute_hash
from tests.conftest import client_for


def record_many(orgs: list[Any], n: int) -> list[AuditEvent]:
    return [
        audit_record(
            actor=None,
            tag=AuditTag.DEVICE_REGISTER,
            details={"i": i, "note": f"event {i}", "nested": {"b": [1, 2], "a": None}},
            concerns=[orgs[i % len(orgs)]],
        )
        for i in range(n)
    ]


@pytest.fixture
def chain(world: Any) -> list[AuditEvent]:
    return record_many([world.owner, world.stranger, world.collaborator], 60)


def verify() -> str:
    from io import StringIO

    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def test_an_empty_trail_verifies(db: Any) -> None:
    assert audit_verify_chain() == 0
    assert "0 events verified" in verify()


def test_the_chain_links_each_event_to_the_previous_one(chain: list[AuditEvent]) -> None:
    assert chain[0].prev_hash == GENESIS_HASH
    for before, after in zip(chain, chain[1:], strict=False):
        assert after.prev_hash == before.hash
        assert after.seq > before.seq
    head = AuditChainHead.objects.get()
    assert (head.last_seq, head.last_hash) == (chain[-1].seq, chain[-1].hash)


def test_many_events_verify_and_audit_verify_passes(chain: list[AuditEvent]) -> None:
    assert audit_verify_chain(batch_size=7) == 60
    assert "audit chain intact: 60 events verified" in verify()


def test_stored_events_hash_the_same_after_a_round_trip_through_the_database(chain: list[AuditEvent]) -> None:
    # JSON columns may reorder keys (jsonb) and timestamps lose nothing: the hash is canonical
    for event in AuditEvent.objects.order_by("seq"):
        assert compute_hash(event) == event.hash


@pytest.mark.parametrize(
    "edit",
    [
        {"details": {"i": 0, "note": "rewritten history"}},
        {"tag": AuditTag.ORG_SUSPEND.value},
        {"actor_username": "someone-else"},
        {"concerned_org_ids": []},
        {"target_repr": "nothing to see"},
    ],
    ids=["details", "tag", "actor", "concerned", "target"],
)
def test_editing_one_event_is_named_by_its_number(chain: list[AuditEvent], edit: dict[str, Any]) -> None:
    # given one event in the middle of the chain, edited in place by someone with database access
    victim = chain[25]
    AuditEvent.objects.filter(seq=victim.seq).update(**edit)
    # when / then
    with pytest.raises(CommandError, match=rf"#{victim.seq}\b.*edited"):
        verify()


def test_re_hashing_an_edited_event_breaks_the_link_to_the_next(chain: list[AuditEvent]) -> None:
    # an attacker who edits a row and recomputes its hash still breaks the next event's prev_hash
    victim = AuditEvent.objects.get(seq=chain[10].seq)
    victim.details = {"forged": True}
    victim.hash = compute_hash(victim)
    AuditEvent.objects.filter(seq=victim.seq).update(details=victim.details, hash=victim.hash)
    with pytest.raises(CommandError, match=rf"#{chain[11].seq}\b.*removed or reordered"):
        verify()


def test_deleting_a_middle_event_is_named_at_the_break(chain: list[AuditEvent]) -> None:
    AuditEvent.objects.filter(seq=chain[30].seq).delete()
    with pytest.raises(ChainBreak) as info:
        audit_verify_chain()
    assert info.value.seq == chain[31].seq
    with pytest.raises(CommandError, match=rf"#{chain[31].seq}\b"):
        verify()


def test_deleting_the_first_event_is_detected(chain: list[AuditEvent]) -> None:
    AuditEvent.objects.filter(seq=chain[0].seq).delete()
    with pytest.raises(CommandError, match=rf"#{chain[1].seq}\b"):
        verify()


def test_deleting_the_newest_event_is_detected_through_the_chain_head(chain: list[AuditEvent]) -> None:
    AuditEvent.objects.filter(seq=chain[-1].seq).delete()
    with pytest.raises(ChainBreak) as info:
        audit_verify_chain()
    assert info.value.seq == chain[-1].seq
    with pytest.raises(CommandError, match=rf"#{chain[-1].seq}\b.*newest events were removed"):
        verify()


def test_deleting_every_event_is_detected_through_the_chain_head(chain: list[AuditEvent]) -> None:
    AuditEvent.objects.all().delete()
    with pytest.raises(CommandError, match="newest events were removed"):
        verify()


def test_swapping_two_events_contents_is_detected(chain: list[AuditEvent]) -> None:
    a, b = chain[5], chain[6]
    AuditEvent.objects.filter(seq=a.seq).update(details=b.details)
    AuditEvent.objects.filter(seq=b.seq).update(details=a.details)
    with pytest.raises(CommandError, match=rf"#{a.seq}\b"):
        verify()


def test_the_chain_continues_correctly_after_verification(chain: list[AuditEvent], world: Any) -> None:
    audit_verify_chain()
    more = record_many([world.owner], 5)
    assert more[0].prev_hash == chain[-1].hash
    assert audit_verify_chain() == 65


def test_an_event_records_actor_target_and_concerned_organisations(world: Any) -> None:
    from tenants.access import resolve_actor

    actor = resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei")
    event = audit_record(actor=actor, tag=AuditTag.SD_REGISTER, target=world.ssd, concerns=[world.provider])
    assert event.actor_user == world.collaborator_user
    assert event.target_type == "devices.securitydomain"
    assert event.target_id == str(world.ssd.pk)
    assert sorted(event.concerned_org_ids) == sorted(
        str(o.pk) for o in (world.collaborator, world.owner, world.provider)
    )


# --- reading through the API ---------------------------------------------------------------------


def test_an_organisation_sees_only_the_events_that_concern_it(chain: list[AuditEvent], world: Any) -> None:
    owner_seqs = {e.seq for i, e in enumerate(chain) if i % 3 == 0}
    seen: set[int] = set()
    url: str | None = "/api/v1/orgs/owner-sei/audit/?limit=7"
    client = client_for(world.owner_user)
    while url:
        resp = client.get(url)
        assert resp.status_code == 200
        seen |= {e["seq"] for e in resp.json()["results"]}
        url = resp.json()["next"]
    assert seen == owner_seqs
    # and cannot open another organisation's event by number
    strangers = chain[1]
    assert client.get(f"/api/v1/orgs/owner-sei/audit/{strangers.seq}/").status_code == 404
    mine = chain[0]
    resp = client.get(f"/api/v1/orgs/owner-sei/audit/{mine.seq}/")
    assert resp.status_code == 200
    assert resp.json()["hash"] == mine.hash


def test_the_collaborator_with_audit_view_reads_the_owners_trail_on_its_behalf(
    chain: list[AuditEvent], world: Any
) -> None:
    resp = client_for(world.collaborator_user).get(
        "/api/v1/orgs/collab-tsm/audit/?on_behalf_of=owner-sei&limit=100"
    )
    assert resp.status_code == 200
    assert {e["seq"] for e in resp.json()["results"]} == {e.seq for i, e in enumerate(chain) if i % 3 == 0}


def test_the_audit_list_filters_by_tag(chain: list[AuditEvent], world: Any) -> None:
    audit_record(actor=None, tag=AuditTag.ORG_SUSPEND, concerns=[world.owner])
    resp = client_for(world.owner_user).get("/api/v1/orgs/owner-sei/audit/?tag=org:suspend")
    assert [e["tag"] for e in resp.json()["results"]] == ["org:suspend"]


@pytest.mark.parametrize("pk", ["abc", "-1", "1.5", "99999999999999999999999999", "0"])
def test_an_odd_audit_event_number_is_404(world: Any, pk: str) -> None:
    resp = client_for(world.owner_user).get(f"/api/v1/orgs/owner-sei/audit/{pk}/")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
