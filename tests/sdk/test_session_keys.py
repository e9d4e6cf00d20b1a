"""tessera-provider master-key new / session-key (sdk/sessionkeys.py): the master key the store
generates goes onto the card with the PUT KEY it answers, and the store derives the same session key
the card does."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gp.commands import (
    AID,
    CPLC,
    ClearKey,
    InstallForInstall,
    InstallForPersonalization,
    InstallParameters,
    KeyType,
    Privileges,
    PutKey,
)
from gp.scp03 import StaticKeys
from gp.sessionkeys import DeriveSessionKey, parse_response
from sdk.cli import main
from sdk.store import KeyStore
from tests.gp.cardkit import ISD_KEYS, Terminal, new_card

SSD = AID("A000000151535001")
SE_ID = "0102030405060708"  # the store's key-set SE identifier (the CASD's)


def _run(capsys: Any, *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _card_with_ssd(keys: tuple[bytes, bytes, bytes]) -> Any:
    card = new_card()
    isd = Terminal(card).open()
    isd.ok(
        InstallForInstall(
            AID("A0000001515350"),
            AID("A000000151535041"),
            SSD,
            Privileges.SECURITY_DOMAIN,
            InstallParameters(bytes.fromhex("81020370")),
        ).to_apdu()
    )
    isd.ok(InstallForPersonalization(SSD).to_apdu())
    isd.ok(PutKey(0x30, tuple(ClearKey(KeyType.AES, k) for k in keys)).to_apdu(dek=ISD_KEYS.dek))
    return card


def test_the_master_key_goes_on_the_card_and_both_derive_the_same_session_key(
    store: KeyStore, capsys: Any
) -> None:
    # given the SD's SCP03 key set in the store and on the card
    rec, keys = store.new_key_set(se_id=SE_ID, sd=bytes(SSD).hex(), kvn=0x30, key_length=16)
    card = _card_with_ssd(keys)
    serial = CPLC.parse(card._state.cplc).ic_serial_number.hex()
    path = str(store.path)
    # when the provider makes a master key and sends its PUT KEY in its own session
    code, out, err = _run(
        capsys,
        "master-key",
        "new",
        "--store",
        path,
        "--se-serial",
        serial,
        "--sd",
        bytes(SSD).hex(),
        "--keyset-se-id",
        SE_ID,
        "--kvn",
        "30",
    )
    assert code == 0, err
    assert out["kvn"] == "72" and len(out["kcv"]) == 6 and "sealed" not in out
    Terminal(card).open(StaticKeys(*keys), aid=SSD).ok(bytes.fromhex(out["put_key_apdu"]))
    # then the card's answer and the store's derivation agree
    t = Terminal(card)
    t.select(SSD)
    on_card = parse_response(card.transmit(DeriveSessionKey("meter.reading", 20419).to_apdu().encode()))
    code, derived, err = _run(
        capsys,
        "session-key",
        "--store",
        path,
        "--se-serial",
        serial,
        "--sd",
        bytes(SSD).hex(),
        "--service",
        "meter.reading",
        "--epoch",
        "20419",
    )
    assert code == 0, err
    assert derived["key"] == on_card.hex().upper() and derived["master_key_kcv"] == out["kcv"]
    # and the stored master key is sealed, owner-only
    files = list((store.path / "session-masters").glob("*.json"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert derived["key"].lower() not in files[0].read_text().lower()


def test_today_is_accepted_as_an_epoch(store: KeyStore, capsys: Any) -> None:
    path = str(store.path)
    assert (
        _run(
            capsys, "master-key", "new", "--store", path, "--se-serial", "C0FFEE01", "--sd", bytes(SSD).hex()
        )[0]
        == 0
    )
    code, out, err = _run(
        capsys,
        "session-key",
        "--store",
        path,
        "--se-serial",
        "C0FFEE01",
        "--sd",
        bytes(SSD).hex(),
        "--service",
        "meter.reading",
        "--epoch",
        "today",
    )
    assert code == 0, err
    assert out["epoch"] > 20000


@pytest.mark.parametrize(
    ("argv", "code_word"),
    [
        (["--service", "Bad Name", "--epoch", "1"], "bad_input"),
        (["--service", "meter", "--epoch", "yesterday"], "bad_epoch"),
        (["--service", "meter", "--epoch", "-1"], "bad_input"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    store: KeyStore, capsys: Any, argv: list[str], code_word: str
) -> None:
    path = str(store.path)
    _run(capsys, "master-key", "new", "--store", path, "--se-serial", "C0FFEE01", "--sd", bytes(SSD).hex())
    code, _, err = _run(
        capsys, "session-key", "--store", path, "--se-serial", "C0FFEE01", "--sd", bytes(SSD).hex(), *argv
    )
    assert code == 2 and f": {code_word}: " in err and "Traceback" not in err


def test_without_a_master_key_the_store_says_so(store: KeyStore, capsys: Any) -> None:
    code, _, err = _run(
        capsys,
        "session-key",
        "--store",
        str(store.path),
        "--se-serial",
        "C0FFEE01",
        "--sd",
        bytes(SSD).hex(),
        "--service",
        "meter",
        "--epoch",
        "1",
    )
    assert code == 2 and "no_master_key" in err


def test_a_new_master_key_keeps_the_replaced_one(store: KeyStore, capsys: Any) -> None:
    path = str(store.path)
    args = ["master-key", "new", "--store", path, "--se-serial", "C0FFEE01", "--sd", bytes(SSD).hex()]
    first = _run(capsys, *args)[1]
    second = _run(capsys, *args)[1]
    assert first["kcv"] != second["kcv"]
    assert len(list((Path(path) / "session-masters").glob("*.replaced-*.json"))) == 1
    assert os.listdir(Path(path) / "session-masters")
