"""The Django-free parts of bench.switch_campaign: the meters it builds and what the swarm loads.

The whole bench (real processes) runs with ``python -m bench.switch_campaign --meters 50``."""

from __future__ import annotations

import base64
import json
import os

from bench import _swarm as W
from gp.card import SoftCard
from gp.card.state import CardState
from gp.scp03 import HostSession, StaticKeys
from jobs.compiler import payloads

ISD = bytes.fromhex(W.ISD_AID)
OLD = bytes.fromhex(W.OLD_SD)


def _aids(card: SoftCard) -> set[str]:
    return {bytes(e.aid).hex().upper() for e in card.registry.applications}


def _isd_session(card: SoftCard, keys: StaticKeys) -> HostSession:
    assert card.transmit(bytes.fromhex("00A4040008" + W.ISD_AID + "00"))[-2:] == b"\x90\x00"
    host = HostSession(keys, security_level=0x33, host_challenge=os.urandom(8), key_version=0x30)
    answer = card.transmit(host.initialize_update())
    assert answer[-2:] == b"\x90\x00"
    assert card.transmit(host.external_authenticate(answer[:-2])) == b"\x90\x00"
    return host


def test_a_meter_card_holds_the_old_sd_and_the_isd_keys_delete_it():
    card, keys, counter = W._card_with_old_sd()
    assert W.OLD_SD in _aids(card)
    # the counter the portal is told at enrolment is the one the card's next session uses
    assert counter == card.sequence_counter(ISD, 0x30) == 2
    host = _isd_session(card, keys)  # what the switch's delete_old step runs in: the ISD session
    for command in payloads.delete_security_domain(aid=OLD):
        sw = host.unwrap(card.transmit(host.wrap(command.apdu)))[-2:]
        assert sw.hex().upper() in {*command.expect, "9000"}, (command.label, sw.hex())
    assert W.OLD_SD not in _aids(card)
    assert card.sequence_counter(ISD, 0x30) == counter + 1


def test_make_meters_writes_what_the_swarm_loads_and_the_portal_part_matches(tmp_path):
    public = W.make_meters(2, tmp_path / "meters.json")
    private = json.loads((tmp_path / "meters.json").read_text())
    assert [m["serial"] for m in private] == [p["serial"] for p in public] == ["SWB-00000", "SWB-00001"]
    assert oct((tmp_path / "meters.json").stat().st_mode & 0o777) == "0o600"
    assert not any("private" in k for p in public for k in p)  # the portal gets public parts only
    for m, p in zip(private, public, strict=True):
        state = CardState.from_dict(json.loads(base64.b64decode(m["card"])))
        card = SoftCard(state, path=None, state_key=None)  # as the swarm process builds it
        assert W.OLD_SD in _aids(card)
        keys = StaticKeys(bytes.fromhex(p["enc"]), bytes.fromhex(p["mac"]), bytes.fromhex(p["dek"]))
        _isd_session(card, keys)  # the ISD keys enrolled open the card's ISD at the counter enrolled
        assert card.sequence_counter(ISD, 0x30) == p["counter"] + 1


def test_statement_counts_split_transaction_control_and_group_by_table(monkeypatch):
    rows = [
        ('SELECT "jobs_job"."id" FROM "jobs_job" WHERE "jobs_job"."id" = $1', 10),
        ("BEGIN", 5),
        ("COMMIT", 5),
        ('UPDATE "switches_switch" SET "step" = $1', 3),
        ('INSERT INTO "audit_auditevent" ("a") VALUES ($1)', 4),
        (
            'SELECT 1 FROM ONLY "public"."tenants_organisation" x WHERE "id" OPERATOR(pg_catalog.=) $1 FOR KEY SHARE OF x',
            6,
        ),
    ]

    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def execute(self, *args):
            return type("R", (), {"fetchall": lambda self: rows})()

    monkeypatch.setattr(W, "pg_connect", lambda port, db: Conn())
    out = W.pg_statements(0, "db")
    assert (out["all"], out["tx_control"], out["fk_checks"], out["sql"]) == (33, 10, 6, 17)
    assert dict(out["top"]) == {
        "SELECT jobs_job": 10,
        "transaction control": 10,
        "FK check tenants_organisation": 6,
        "INSERT audit_auditevent": 4,
        "UPDATE switches_switch": 3,
    }
