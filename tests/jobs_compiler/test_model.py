"""Random valid sequences of jobs on one card keep its GET STATUS consistent with a simple model."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gp.card import SD_LOAD_FILE_AID
from gp.commands import AID, Privileges
from jobs.compiler import parse_inventory
from jobs.compiler import payloads as P
from jobs.compiler.demo_app import DEMO_LOAD_FILE_AID, DEMO_MODULE_AID, demo_load_file
from tests.jobs_compiler.kit import ISD, Engine, new_card, random_keys

SDS = [AID(bytes.fromhex("A0000005590030") + bytes([i])) for i in range(3)]
APPS = [AID(bytes(DEMO_LOAD_FILE_AID) + bytes([0x01, i])) for i in range(3)]
MODES = st.sampled_from(["precomputed", "interactive"])


class JobsOnOneCard(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine.for_new_card(new_card())
        self.isd_kvn = 0x30
        self.sds: dict[AID, int] = {}  # SD -> its KVN
        self.apps: dict[AID, bool] = {}  # instance -> locked
        self.loaded = False

    def run(self, payload, mode, **kw):
        outcome = self.engine.run(payload, mode=mode, kvn=kw.pop("kvn", self.isd_kvn), **kw)
        assert outcome.completed, (outcome.failed_label, hex(outcome.failed_sw or 0))
        return outcome

    @precondition(lambda self: len(self.sds) < len(SDS))
    @rule(data=st.data(), mode=MODES)
    def create_sd(self, data, mode):
        aid = data.draw(st.sampled_from([a for a in SDS if a not in self.sds]))
        keys = random_keys()
        self.run(
            P.create_security_domain(
                isd_keys=self.engine.keys[(ISD, self.isd_kvn)],
                ssd_aid=aid,
                privileges=Privileges.SECURITY_DOMAIN,
                new_keys=keys,
                new_kvn=0x20,
            ),
            mode,
        )
        self.engine.add_keys(aid, 0x20, keys)
        self.sds[aid] = 0x20
        self.run(P.verify_keys(), mode, sd=aid, kvn=0x20)

    @precondition(lambda self: self.sds)
    @rule(data=st.data(), mode=MODES)
    def delete_sd(self, data, mode):
        aid = data.draw(st.sampled_from(sorted(self.sds)))
        self.run(P.delete_security_domain(aid=aid), mode)
        self.engine.forget(aid, self.sds.pop(aid))

    @precondition(lambda self: self.sds)
    @rule(data=st.data(), mode=MODES, replace=st.booleans())
    def rotate_sd_keys(self, data, mode, replace):
        aid = data.draw(st.sampled_from(sorted(self.sds)))
        old_kvn = self.sds[aid]
        new_kvn = 0x21 if old_kvn == 0x20 else 0x20
        new = random_keys()
        payload = P.rotate_keys(
            sd_keys=self.engine.keys[(aid, old_kvn)],
            new_keys=new,
            new_kvn=new_kvn,
            replace=replace,
            current_kvn=old_kvn,
        )
        self.run(payload, mode, sd=aid, kvn=old_kvn)
        self.engine.add_keys(aid, new_kvn, new)
        if not replace:
            self.run(P.verify_keys(), mode, sd=aid, kvn=new_kvn)
            self.run(P.delete_key_version(kvn=old_kvn), mode, sd=aid, kvn=new_kvn)
        self.engine.forget(aid, old_kvn)
        self.sds[aid] = new_kvn

    @precondition(lambda self: len(self.apps) < len(APPS))
    @rule(data=st.data(), mode=MODES)
    def install_app(self, data, mode):
        if not self.loaded:
            self.run(
                P.load_file(load_file_aid=DEMO_LOAD_FILE_AID, sd_aid=ISD, data=demo_load_file(filler=300)),
                mode,
            )
            self.loaded = True
        aid = data.draw(st.sampled_from([a for a in APPS if a not in self.apps]))
        self.run(
            P.install_application(
                load_file_aid=DEMO_LOAD_FILE_AID, module_aid=DEMO_MODULE_AID, instance_aid=aid
            ),
            mode,
        )
        self.apps[aid] = False

    @precondition(lambda self: self.apps)
    @rule(data=st.data(), mode=MODES)
    def toggle_lock(self, data, mode):
        aid = data.draw(st.sampled_from(sorted(self.apps)))
        self.run(P.set_status(aid=aid, lock=not self.apps[aid]), mode)
        self.apps[aid] = not self.apps[aid]

    @precondition(lambda self: self.apps)
    @rule(data=st.data(), mode=MODES)
    def delete_app(self, data, mode):
        aid = data.draw(st.sampled_from(sorted(self.apps)))
        self.run(P.delete_application(aid=aid), mode)
        del self.apps[aid]

    @precondition(lambda self: self.loaded and not self.apps)
    @rule(mode=MODES)
    def delete_load_file(self, mode):
        self.run(P.delete_application(aid=DEMO_LOAD_FILE_AID, related=True), mode)
        self.loaded = False

    @rule(mode=MODES)
    def rotate_isd_keys(self, mode):
        new_kvn = 0x31 if self.isd_kvn == 0x30 else 0x30
        new = random_keys()
        self.run(
            P.rotate_keys(
                sd_keys=self.engine.keys[(ISD, self.isd_kvn)],
                new_keys=new,
                new_kvn=new_kvn,
                replace=True,
                current_kvn=self.isd_kvn,
            ),
            mode,
        )
        self.engine.forget(ISD, self.isd_kvn)
        self.engine.add_keys(ISD, new_kvn, new)
        self.isd_kvn = new_kvn

    @invariant()
    def get_status_matches_the_model(self):
        inv = parse_inventory(self.run(P.read_status(), "precomputed"))
        assert inv.complete
        assert {e.aid for e in inv.security_domains} == set(self.sds)
        assert all(e.associated_sd_aid == ISD for e in inv.security_domains)
        assert {e.aid: e.locked for e in inv.applications} == self.apps
        expected_elfs = {SD_LOAD_FILE_AID} | ({DEMO_LOAD_FILE_AID} if self.loaded else set())
        assert {e.aid for e in inv.load_files} == expected_elfs
        assert inv.key_versions() == {self.isd_kvn}
        assert self.engine.card.registry.key_versions == {
            ISD: (self.isd_kvn,),
            **{a: (k,) for a, k in self.sds.items()},
        }
        for (sd, kvn), counter in self.engine.counters.items():
            assert self.engine.card.sequence_counter(sd, kvn) == counter


JobsOnOneCard.TestCase.settings = settings(
    max_examples=60, stateful_step_count=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestJobsOnOneCard = JobsOnOneCard.TestCase
