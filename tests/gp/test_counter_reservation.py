"""Sequence counter reservation on a persisted card: never a repeat, across crashes and clean closes.

Amendment D v1.2 §6.2.2.1: the pseudo-random card challenge is derived from the sequence counter,
so a counter value must never be used twice (skipping values is allowed).  A "crash" here is
dropping the card object without close() and opening the file again, as a process killed
between two sessions would.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from gp.card import SoftCard, storage
from gp.card.softcard import COUNTER_RESERVATION
from gp.commands import AID, InstallForInstall, Privileges
from gp.scp03 import HostSession
from tests.gp.cardkit import ISD, ISD_KEYS, ISD_KVN, Terminal, new_card


def initialize_update(card: SoftCard) -> int | None:
    """One INITIALIZE UPDATE (+ EXTERNAL AUTHENTICATE); the counter the card used, None if refused."""
    t = Terminal(card)
    t.select(ISD)
    host = HostSession(ISD_KEYS, security_level=0x01, host_challenge=os.urandom(8))
    rsp = t.plain(host.initialize_update())
    if rsp.sw != 0x9000:
        return None
    assert t.plain(host.external_authenticate(rsp.data)).sw == 0x9000
    return int.from_bytes(rsp.data[-3:], "big")


def count_saves(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = storage.save

    def counting(path: str, payload: bytes, key: bytes) -> None:
        calls.append(path)
        original(path, payload, key)

    monkeypatch.setattr(storage, "save", counting)
    return calls


@settings(max_examples=25, deadline=None)
@given(runs=st.lists(st.tuples(st.integers(0, 150), st.booleans()), min_size=1, max_size=6))
def test_a_counter_never_repeats_across_crashes_and_clean_closes(tmp_path_factory, runs):
    path = str(tmp_path_factory.mktemp("card") / "card.se")
    card = new_card(path)
    used: list[int] = []
    for sessions, clean in runs:
        for _ in range(sessions):
            counter = initialize_update(card)
            assert counter is not None
            assert not used or counter > max(used)  # strictly increasing: never a repeat
            used.append(counter)
        expected = card.sequence_counter(ISD, ISD_KVN)
        if clean:
            assert card.close()
        card = SoftCard.open(path)  # the crash (or the clean restart)
        resumed = card.sequence_counter(ISD, ISD_KVN)
        assert not used or resumed > max(used)
        if clean:
            assert resumed == expected  # a clean close loses nothing
        else:
            assert expected <= resumed <= expected + COUNTER_RESERVATION  # a crash skips at most a window
    counter = initialize_update(card)
    assert counter is not None and (not used or counter > max(used))


def test_a_crash_resumes_above_every_counter_used(tmp_path, monkeypatch):
    path = str(tmp_path / "card.se")
    card = new_card(path, sequence_counter=100)
    saves = count_saves(monkeypatch)
    used = [initialize_update(card) for _ in range(10)]
    assert used == list(range(100, 110))
    assert len(saves) == 1  # one write reserved 100..163
    del card  # killed between two sessions: no close()
    reopened = SoftCard.open(path)
    assert reopened.sequence_counter(ISD, ISD_KVN) == 100 + COUNTER_RESERVATION
    assert initialize_update(reopened) == 100 + COUNTER_RESERVATION
    assert len(saves) == 2  # the reopened card reserves before it uses the first value


def test_the_reservation_is_on_disk_before_the_card_answers(tmp_path, monkeypatch):
    path = str(tmp_path / "card.se")
    card = new_card(path)
    for _ in range(COUNTER_RESERVATION):
        initialize_update(card)
    # the next INITIALIZE UPDATE must raise the reservation: make that write fail (power loss)
    on_disk = open(path, "rb").read()

    def crash(tmp: str, final: str) -> None:
        raise OSError(5, "simulated power loss")

    monkeypatch.setattr(storage, "_commit", crash)
    assert initialize_update(card) is None  # 6581: the counter was not used
    assert open(path, "rb").read() == on_disk
    assert card.sequence_counter(ISD, ISD_KVN) == 1 + COUNTER_RESERVATION
    monkeypatch.undo()
    assert initialize_update(card) == 1 + COUNTER_RESERVATION
    assert SoftCard.open(path).sequence_counter(ISD, ISD_KVN) == 1 + 2 * COUNTER_RESERVATION


def test_a_failed_card_content_command_never_rolls_the_counter_back(tmp_path):
    path = str(tmp_path / "card.se")
    card = new_card(path)
    t = Terminal(card).open()
    t.ok(bytes.fromhex("80F28002024F0000"))
    counter = card.sequence_counter(ISD, ISD_KVN)
    for _ in range(3):
        Terminal(card).open()
    t = Terminal(card).open()
    # a refused INSTALL restores the state snapshot: the counters must stay where they are
    missing = InstallForInstall(
        AID("A0000005590099"), AID("A000000559009901"), AID("A00000055900990101"), Privileges(0)
    )
    assert t.send(missing.to_apdu()).sw == 0x6A88
    assert card.sequence_counter(ISD, ISD_KVN) == counter + 4


def test_close_writes_the_exact_counter_once_and_the_card_stays_usable(tmp_path, monkeypatch):
    path = str(tmp_path / "card.se")
    card = new_card(path, sequence_counter=7)
    saves = count_saves(monkeypatch)
    assert card.close() and saves == []  # nothing reserved yet: nothing to write
    assert [initialize_update(card) for _ in range(3)] == [7, 8, 9]
    assert len(saves) == 1
    assert card.close() and len(saves) == 2
    assert card.close() and len(saves) == 2  # idempotent
    assert SoftCard.open(path).sequence_counter(ISD, ISD_KVN) == 10
    assert initialize_update(card) == 10 and len(saves) == 3  # usable: reserves again
    with SoftCard.open(path) as other:  # a context manager closes too
        assert other.sequence_counter(ISD, ISD_KVN) == 10 + COUNTER_RESERVATION
        assert initialize_update(other) == 10 + COUNTER_RESERVATION
    assert SoftCard.open(path).sequence_counter(ISD, ISD_KVN) == 11 + COUNTER_RESERVATION


def test_a_failed_close_keeps_the_reservation(tmp_path, monkeypatch):
    path = str(tmp_path / "card.se")
    card = new_card(path)
    initialize_update(card)

    def crash(tmp: str, final: str) -> None:
        raise OSError(28, "no space left")

    monkeypatch.setattr(storage, "_commit", crash)
    assert not card.close()
    assert card.reserved_until(ISD, ISD_KVN) == 1 + COUNTER_RESERVATION
    monkeypatch.undo()
    assert SoftCard.open(path).sequence_counter(ISD, ISD_KVN) == 1 + COUNTER_RESERVATION


def test_the_counter_stops_at_its_3_byte_limit(tmp_path):
    path = str(tmp_path / "card.se")
    card = new_card(path, sequence_counter=0xFFFFFE)
    assert initialize_update(card) == 0xFFFFFE
    assert initialize_update(card) == 0xFFFFFF
    assert initialize_update(card) is None  # exhausted: 6985
    assert SoftCard.open(path).sequence_counter(ISD, ISD_KVN) == 0x1000000


def test_an_in_memory_card_reserves_nothing():
    card = new_card(None, sequence_counter=3)
    assert initialize_update(card) == 3
    assert card.reserved_until(ISD, ISD_KVN) == 0
    [ks] = card.state_dict()["applications"][0]["keys"]
    assert ks["counter"] == 4 and "reserved" not in ks


def test_a_card_file_without_reservations_opens_as_before(tmp_path):
    path = str(tmp_path / "card.se")
    card = new_card(path, sequence_counter=12)
    assert card.close()
    [ks] = SoftCard.open(path).state_dict()["applications"][0]["keys"]
    assert ks["counter"] == 12 and "reserved" not in ks
