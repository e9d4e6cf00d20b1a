"""Session plans and scripts: prediction, counter mismatch, wrong keys, partial answers, tampering."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gp.commands import AID, Privileges
from gp.scp03 import kcv
from jobs.compiler import (
    CardAuthError,
    CompilerError,
    CounterMismatch,
    PayloadCommand,
    ScriptError,
    SessionPlan,
    interactive_continue,
    interactive_open,
    new_plan,
    parse_inventory,
    precomputed_script,
    sw_matches,
    unwrap_responses,
)
from jobs.compiler import payloads as P
from jobs.compiler.session import predicted_iu_response
from tests.jobs_compiler.kit import I_PARAM, ISD, ISD_KEYS, ISD_KVN, Engine, agent, new_card, random_keys

ROOT = Path(__file__).resolve().parents[2]
SSD = AID("A000000559001001")


def create_payload(keys=None):
    return P.create_security_domain(
        isd_keys=ISD_KEYS,
        ssd_aid=SSD,
        privileges=Privileges.SECURITY_DOMAIN,
        new_keys=keys or random_keys(),
        new_kvn=0x20,
    )


def plan_for(card, mode="precomputed", counter=None, **kw):
    if mode == "precomputed" and counter is None:
        counter = card.sequence_counter(ISD, ISD_KVN)
    return new_plan(sd_aid=ISD, kvn=ISD_KVN, i_param=I_PARAM, sequence_counter=counter, mode=mode, **kw)


def test_plan_round_trips_through_json_and_holds_no_secret():
    plan = new_plan(sd_aid=ISD, kvn=0x30, i_param=0x70, sequence_counter=7, mode="precomputed")
    text = plan.to_json()
    assert SessionPlan.from_json(text) == plan
    assert SessionPlan.from_json(json.loads(text)) == plan
    assert set(json.loads(text)) == {
        "sd_aid", "kvn", "i_param", "host_challenge", "sequence_counter", "mode", "security_level", "channel",
    }  # fmt: skip
    for secret in (ISD_KEYS.enc, ISD_KEYS.mac, ISD_KEYS.dek):
        assert secret.hex() not in text.lower() and secret.hex().upper() not in text
    assert plan.security_level == 0x33 and len(bytes.fromhex(plan.host_challenge)) == 8
    assert new_plan(sd_aid=ISD, kvn=0x30, i_param=0x70, sequence_counter=7, mode="precomputed") != plan
    with pytest.raises(CompilerError):
        SessionPlan.from_json('{"sd_aid": "A000000151000000", "bogus": 1}')
    with pytest.raises(CompilerError):  # precomputed needs a counter and the pseudo-random challenge
        new_plan(sd_aid=ISD, kvn=0x30, i_param=0x70, sequence_counter=None, mode="precomputed")
    with pytest.raises(CompilerError):
        new_plan(sd_aid=ISD, kvn=0x30, i_param=0x60, sequence_counter=1, mode="precomputed")


def test_sw_matching_follows_the_agent_protocol():
    assert sw_matches(0x6310, ("63xx",)) and sw_matches(0x9000, ()) and not sw_matches(0x6A88, ("9000",))
    assert PayloadCommand(b"\x80\xca\x00\xe0\x00", ("63XX",)).expect == ("63XX",)
    with pytest.raises(CompilerError):
        PayloadCommand(b"\x80\xca\x00\xe0\x00", ("900",))


def test_the_predicted_initialize_update_answer_is_the_cards():
    card = new_card(sequence_counter=41)
    plan = plan_for(card)
    script = precomputed_script(keys=ISD_KEYS, plan=plan, payload=[])
    assert [c.label for c in script.commands] == ["SELECT SD", "INITIALIZE UPDATE", "EXTERNAL AUTHENTICATE"]
    responses = agent(card, script)
    assert responses[1][10:-2] == predicted_iu_response(ISD_KEYS, plan)[10:]
    assert [r[-2:] for r in responses] == [b"\x90\x00"] * 3
    outcome = unwrap_responses(keys=ISD_KEYS, plan=plan, payload=[], responses=responses)
    assert outcome.completed and outcome.ran == 0 and outcome.next_sequence_counter == 42
    assert card.sequence_counter(ISD, ISD_KVN) == 42


def test_wrong_sequence_counter_is_reported_and_nothing_runs_after_external_authenticate():
    card = new_card(sequence_counter=10)
    before = card.state_dict()
    payload = create_payload()
    plan = plan_for(card, counter=7)
    script = precomputed_script(keys=ISD_KEYS, plan=plan, payload=payload)
    responses = agent(card, script)
    assert len(responses) == 3 and responses[2] == bytes.fromhex("6300")  # card refused EA, script stopped
    with pytest.raises(CounterMismatch) as e:
        unwrap_responses(keys=ISD_KEYS, plan=plan, payload=payload, responses=responses)
    assert e.value.actual_counter == 10 and e.value.next_sequence_counter == 11
    after = card.state_dict()
    for a in after["applications"]:
        for ks in a["keys"]:
            ks["counter"] = None
    for a in before["applications"]:
        for ks in a["keys"]:
            ks["counter"] = None
    assert after == before  # no content change
    # retry with the reported counter: the script runs
    plan = plan_for(card, counter=e.value.next_sequence_counter)
    script = precomputed_script(keys=ISD_KEYS, plan=plan, payload=payload)
    outcome = unwrap_responses(keys=ISD_KEYS, plan=plan, payload=payload, responses=agent(card, script))
    assert outcome.completed and SSD in card.registry


def test_precomputed_with_wrong_keys_is_an_authentication_error_not_a_counter_problem():
    card = new_card()
    plan = plan_for(card)
    wrong = random_keys()
    responses = agent(card, precomputed_script(keys=wrong, plan=plan, payload=[]))
    assert responses[-1] == bytes.fromhex("6300")
    with pytest.raises(CardAuthError):
        unwrap_responses(keys=wrong, plan=plan, payload=[], responses=responses)
    # wrong keys and a wrong counter: still the keys are blamed
    plan = plan_for(card, counter=1)
    responses = agent(card, precomputed_script(keys=wrong, plan=plan, payload=[]))
    with pytest.raises(CardAuthError):
        unwrap_responses(keys=wrong, plan=plan, payload=[], responses=responses)


def test_interactive_with_wrong_keys_raises_card_auth_error():
    card = new_card()
    plan = plan_for(card, mode="interactive")
    opened = interactive_open(plan=plan)
    assert opened.n_setup == 2 and len(opened) == 2
    iu = agent(card, opened)[1]
    with pytest.raises(CardAuthError):
        interactive_continue(keys=random_keys(), plan=plan, iu_response=iu, payload=[])
    with pytest.raises(ScriptError):
        interactive_continue(keys=ISD_KEYS, plan=plan, iu_response=bytes.fromhex("6A88"), payload=[])


@pytest.mark.parametrize("mode", ["precomputed", "interactive"])
def test_partial_responses_unwrap_correctly(mode):
    """The agent was interrupted after k commands: every prefix unwraps to the same first answers."""
    keys = random_keys()
    payload = create_payload(keys)
    full = None
    n_total = len(payload) + (3 if mode == "precomputed" else 1)
    for k in range(n_total + 1):
        card = new_card()
        plan = plan_for(card, mode=mode)
        iu = None
        if mode == "precomputed":
            script = precomputed_script(keys=ISD_KEYS, plan=plan, payload=payload)
        else:
            iu = agent(card, interactive_open(plan=plan))[1]
            script = interactive_continue(keys=ISD_KEYS, plan=plan, iu_response=iu, payload=payload)
        responses = agent(card, script, stop_after=k)
        outcome = unwrap_responses(
            keys=ISD_KEYS, plan=plan, payload=payload, responses=responses, iu_response=iu
        )
        ran = max(0, k - script.n_setup)
        assert outcome.ran == ran and outcome.completed == (k == n_total)
        assert outcome.failed_label is None
        if full is None or k == n_total:
            full = [r.response.sw for r in outcome.results]
        assert [r.response.sw for r in outcome.results] == [0x9000] * ran
        assert (SSD in card.registry) == (ran >= 1)
        if mode == "precomputed":
            assert outcome.next_sequence_counter == plan.sequence_counter + (1 if k >= 2 else 0)
    assert full == [0x9000] * len(payload)


def test_a_failed_command_stops_the_script_and_the_mac_chain_survives_error_status_words():
    engine = Engine.for_new_card(new_card())
    payload = [
        *P.delete_application(aid=AID("A0000005599999")),  # 6A88: not expected, the script stops
        *P.verify_keys(),
    ]
    outcome = engine.run(payload, mode="precomputed")
    assert not outcome.completed and outcome.ran == 1
    assert outcome.failed_label == "DELETE" and outcome.failed_sw == 0x6A88
    # expecting the error lets the script go on: the next command's C-MAC still verifies
    tolerant = [PayloadCommand(payload[0].apdu, ("9000", "6A88"), "DELETE if present"), *P.verify_keys()]
    outcome = engine.run(tolerant, mode="precomputed")
    assert outcome.completed and [r.sw for r in outcome.results] == [0x6A88, 0x9000]
    assert parse_inventory(outcome).key_versions() == {ISD_KVN}


def test_tampered_or_misplaced_responses_raise_script_error():
    card = new_card()
    payload = P.verify_keys()
    plan = plan_for(card)
    responses = agent(card, precomputed_script(keys=ISD_KEYS, plan=plan, payload=payload))
    bad = bytearray(responses[-1])
    bad[0] ^= 1
    with pytest.raises(ScriptError):
        unwrap_responses(keys=ISD_KEYS, plan=plan, payload=payload, responses=[*responses[:-1], bytes(bad)])
    with pytest.raises(ScriptError):
        unwrap_responses(keys=ISD_KEYS, plan=plan, payload=payload, responses=[*responses, b"\x90\x00"])
    with pytest.raises(ScriptError):
        unwrap_responses(keys=ISD_KEYS, plan=plan, payload=payload, responses=[b"\x90"])
    # the same responses unwrapped under another plan (other host challenge) do not verify
    other = SessionPlan.from_json(plan.to_json().replace(plan.host_challenge, "00" * 8))
    with pytest.raises(CardAuthError):
        unwrap_responses(keys=ISD_KEYS, plan=other, payload=payload, responses=responses)


def test_put_key_components_travel_encrypted_under_the_isd_dek():
    keys = random_keys()
    payload = create_payload(keys)
    put = payload[2].apdu
    for k in (keys.enc, keys.mac, keys.dek):
        assert k not in put
        assert kcv(k) in put


def test_compiling_create_security_domain_is_fast():
    keys = random_keys()
    plan = new_plan(sd_aid=ISD, kvn=ISD_KVN, i_param=I_PARAM, sequence_counter=5, mode="precomputed")
    precomputed_script(keys=ISD_KEYS, plan=plan, payload=create_payload(keys))  # warm caches
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        precomputed_script(keys=ISD_KEYS, plan=plan, payload=create_payload(keys))
    per_script = (time.perf_counter() - start) / n
    print(f"create_security_domain: payload + precomputed script in {per_script * 1e3:.3f} ms")
    assert per_script < 0.005


def test_the_compiler_does_not_import_django():
    code = (
        "import sys, jobs.compiler, jobs.compiler.payloads, jobs.compiler.inventory, jobs.compiler.demo_app;"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'));"
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
