"""Test helpers: a minimal agent (docs/agent-protocol.md execution rule) and a counter-keeping engine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gp.card import SoftCard
from gp.commands import AID
from gp.scp03 import StaticKeys
from jobs.compiler import (
    INITIAL_SEQUENCE_COUNTER,
    PayloadCommand,
    Script,
    ScriptOutcome,
    interactive_continue,
    interactive_open,
    new_plan,
    precomputed_script,
    sw_matches,
    unwrap_responses,
)

ISD = AID("A000000151000000")
ISD_KEYS = StaticKeys(bytes(range(0x40, 0x50)), bytes(range(0x50, 0x60)), bytes(range(0x60, 0x70)))
ISD_KVN = 0x30
I_PARAM = 0x70


def new_card(**kw: object) -> SoftCard:
    return SoftCard.create(None, isd_aid=ISD, keys=ISD_KEYS, key_version=ISD_KVN, **kw)  # type: ignore[arg-type]


def random_keys() -> StaticKeys:
    return StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16))


def agent(card: SoftCard, script: Script, *, stop_after: int | None = None) -> list[bytes]:
    """Send commands in order; stop after a response whose SW is not expected (status "failed")
    or, with ``stop_after``, after that many commands (status "interrupted")."""
    out: list[bytes] = []
    for i, cmd in enumerate(script.commands):
        if stop_after is not None and i >= stop_after:
            break
        rsp = card.transmit(cmd.apdu)
        out.append(rsp)
        if not sw_matches(int.from_bytes(rsp[-2:], "big"), cmd.expect):
            break
    return out


@dataclass
class Engine:
    """What the jobs engine keeps per card: keys and sequence counters per (SD, KVN)."""

    card: SoftCard
    keys: dict[tuple[bytes, int], StaticKeys] = field(default_factory=dict)
    counters: dict[tuple[bytes, int], int] = field(default_factory=dict)

    @classmethod
    def for_new_card(cls, card: SoftCard) -> Engine:
        return cls(card, {(ISD, ISD_KVN): ISD_KEYS}, {(ISD, ISD_KVN): 1})

    def add_keys(self, sd: bytes, kvn: int, keys: StaticKeys) -> None:
        self.keys[(AID(sd), kvn)] = keys
        self.counters[(AID(sd), kvn)] = INITIAL_SEQUENCE_COUNTER

    def forget(self, sd: bytes, kvn: int) -> None:
        self.keys.pop((AID(sd), kvn), None)
        self.counters.pop((AID(sd), kvn), None)

    def run(
        self,
        payload: list[PayloadCommand],
        *,
        mode: str,
        sd: bytes = ISD,
        kvn: int = ISD_KVN,
        keys: StaticKeys | None = None,
        counter: int | None = None,
    ) -> ScriptOutcome:
        sd = AID(sd)
        keys = keys or self.keys[(sd, kvn)]
        if mode == "precomputed":
            plan = new_plan(
                sd_aid=sd,
                kvn=kvn,
                i_param=I_PARAM,
                sequence_counter=counter if counter is not None else self.counters[(sd, kvn)],
                mode="precomputed",
            )
            script = precomputed_script(keys=keys, plan=plan, payload=payload)
            responses = agent(self.card, script)
            outcome = unwrap_responses(keys=keys, plan=plan, payload=payload, responses=responses)
        else:
            plan = new_plan(sd_aid=sd, kvn=kvn, i_param=I_PARAM, sequence_counter=None, mode="interactive")
            opened = agent(self.card, interactive_open(plan=plan))
            assert len(opened) == 2, opened
            iu = opened[1]
            script = interactive_continue(keys=keys, plan=plan, iu_response=iu, payload=payload)
            responses = agent(self.card, script)
            outcome = unwrap_responses(
                keys=keys, plan=plan, payload=payload, responses=responses, iu_response=iu
            )
        if outcome.next_sequence_counter is not None:
            self.counters[(sd, kvn)] = outcome.next_sequence_counter
        return outcome
