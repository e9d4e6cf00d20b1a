"""The job engine copes with a persisted soft card whose sequence counter jumped after a crash.

A persisted SoftCard reserves sequence counter values in windows (gp.card.softcard): re-opened
after a crash it resumes at the reservation, skipping the unused rest of the window.  A script
precomputed with the counter the engine remembers then meets another counter: the card refuses
EXTERNAL AUTHENTICATE, unwrap_responses raises CounterMismatch with the card's counter, nothing
ran, and the retry computed with that counter succeeds.  After a clean close() nothing jumps.
"""

from __future__ import annotations

import pytest

from gp.card import SoftCard
from gp.card.softcard import COUNTER_RESERVATION
from gp.commands import AID, Privileges
from jobs.compiler import CounterMismatch, parse_inventory
from jobs.compiler import payloads as P
from tests.jobs_compiler.kit import I_PARAM, ISD, ISD_KEYS, ISD_KVN, Engine, random_keys

SSD = AID("A000000559001001")


def persisted_card(path: str) -> SoftCard:
    return SoftCard.create(path, isd_aid=ISD, keys=ISD_KEYS, key_version=ISD_KVN, i_param=I_PARAM)


def read_status(engine: Engine) -> None:
    outcome = engine.run(P.read_status(), mode="precomputed")
    assert outcome.completed, (outcome.failed_label, outcome.failed_sw)
    assert parse_inventory(outcome).complete


def test_a_precomputed_script_after_a_crash_gets_the_new_counter_and_succeeds_on_retry(tmp_path):
    path = str(tmp_path / "card.se")
    engine = Engine.for_new_card(persisted_card(path))
    for _ in range(3):
        read_status(engine)
    remembered = engine.counters[(ISD, ISD_KVN)]
    assert remembered == 4 == engine.card.sequence_counter(ISD, ISD_KVN)

    engine.card = SoftCard.open(path)  # the process was killed: no close()
    jumped = engine.card.sequence_counter(ISD, ISD_KVN)
    assert jumped == 1 + COUNTER_RESERVATION > remembered

    payload = P.create_security_domain(
        isd_keys=ISD_KEYS,
        ssd_aid=SSD,
        privileges=Privileges.SECURITY_DOMAIN,
        new_keys=random_keys(),
        new_kvn=0x20,
    )
    with pytest.raises(CounterMismatch) as e:
        engine.run(payload, mode="precomputed")
    assert e.value.expected == remembered and e.value.actual_counter == jumped
    assert SSD not in engine.card.registry  # nothing ran past EXTERNAL AUTHENTICATE

    engine.counters[(ISD, ISD_KVN)] = e.value.next_sequence_counter  # what the engine does
    outcome = engine.run(payload, mode="precomputed")
    assert outcome.completed and SSD in engine.card.registry
    assert engine.counters[(ISD, ISD_KVN)] == jumped + 2 == engine.card.sequence_counter(ISD, ISD_KVN)


def test_after_a_clean_close_the_remembered_counter_still_holds(tmp_path):
    path = str(tmp_path / "card.se")
    engine = Engine.for_new_card(persisted_card(path))
    for _ in range(2):
        read_status(engine)
    assert engine.card.close()
    engine.card = SoftCard.open(path)
    assert engine.card.sequence_counter(ISD, ISD_KVN) == engine.counters[(ISD, ISD_KVN)]
    read_status(engine)  # precomputed with the remembered counter: no mismatch
