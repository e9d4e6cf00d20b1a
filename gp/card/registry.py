"""GlobalPlatform Registry queries: association, hierarchy, visibility (GP CS v2.3.1 §6.5, §7.2, §9.1).

Security Domain association forms a forest rooted at the ISD (or at an SD extradited to itself);
"authority over" an entry means being its associated SD or an ancestor of that SD, which is what
card content management, personalization and locking rules are expressed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from gp.card.state import Application, CardState, LoadFile
from gp.commands.status import RegistryEntry, StatusScope
from gp.commands.types import AID, CardLifeCycle, LoadFileLifeCycle, Privileges

__all__ = ["RegistryView", "associated_with", "descendants", "has_authority", "status_entries"]


def ancestors(state: CardState, sd_aid: AID | None) -> list[AID]:
    """``sd_aid`` and the SDs above it, nearest first (cycles cannot occur, but are cut anyway)."""
    out: list[AID] = []
    current = sd_aid
    while current is not None and current not in out:
        out.append(current)
        app = state.applications.get(current)
        current = app.associated_sd if app is not None else None
    return out


def has_authority(state: CardState, sd: Application, associated_sd: AID | None) -> bool:
    """``sd`` is the ISD, the associated SD of the entry, or one of its ancestors."""
    if sd.aid == state.isd_aid:
        return True
    return sd.aid in ancestors(state, associated_sd)


def associated_with(state: CardState, sd_aid: AID) -> tuple[list[Application], list[LoadFile]]:
    apps = [a for a in state.applications.values() if a.associated_sd == sd_aid and a.aid != sd_aid]
    elfs = [lf for lf in state.load_files.values() if lf.associated_sd == sd_aid]
    return apps, elfs


def descendants(state: CardState, sd_aid: AID) -> tuple[list[Application], list[LoadFile]]:
    """Everything associated, directly or through sub-SDs, with ``sd_aid`` (not itself)."""
    apps: list[Application] = []
    elfs: list[LoadFile] = []
    todo = [sd_aid]
    seen = {sd_aid}
    while todo:
        current = todo.pop()
        a, e = associated_with(state, current)
        elfs.extend(e)
        for app in a:
            if app.aid in seen:
                continue
            seen.add(app.aid)
            apps.append(app)
            if app.is_security_domain:
                todo.append(app.aid)
    return apps, elfs


def sees_everything(state: CardState, sd: Application) -> bool:
    return sd.aid == state.isd_aid or sd.has(Privileges.GLOBAL_REGISTRY)


def _app_entry(app: Application) -> RegistryEntry:
    return RegistryEntry(
        app.aid, app.life_cycle, app.privileges, app.load_file_aid, app.associated_sd, None, (), ()
    )


def status_entries(
    state: CardState, sd: Application, scope: StatusScope, prefix: bytes
) -> list[RegistryEntry]:
    """The GET STATUS entries ``sd`` may see (GP CS v2.3.1 §11.4.2.1 and §6.6.1 Global Registry)."""
    everything = sees_everything(state, sd)
    out: list[RegistryEntry] = []
    if scope is StatusScope.ISD:
        if everything and state.isd_aid.startswith(prefix):
            isd = state.isd
            out.append(RegistryEntry(isd.aid, CardLifeCycle(state.life_cycle), isd.privileges))
        return out
    if scope is StatusScope.APPLICATIONS:
        for app in state.applications.values():
            if app.aid == state.isd_aid or not app.aid.startswith(prefix):
                continue
            if everything or app.associated_sd == sd.aid:
                out.append(_app_entry(app))
        return out
    with_modules = scope is StatusScope.LOAD_FILES_AND_MODULES
    for lf in state.load_files.values():
        if not lf.aid.startswith(prefix):
            continue
        if everything or lf.associated_sd == sd.aid:
            out.append(
                RegistryEntry(
                    lf.aid,
                    LoadFileLifeCycle.LOADED,
                    None,
                    None,
                    lf.associated_sd,
                    lf.version,
                    tuple(lf.modules) if with_modules else (),
                )
            )
    return out


@dataclass(frozen=True)
class RegistryView:
    """A read-only snapshot of the registry for tests and tools."""

    card_life_cycle: CardLifeCycle
    applications: tuple[RegistryEntry, ...]
    load_files: tuple[RegistryEntry, ...]
    personalization: dict[AID, tuple[tuple[int, bytes], ...]]
    key_versions: dict[AID, tuple[int, ...]]

    @classmethod
    def of(cls, state: CardState) -> RegistryView:
        apps = tuple(_app_entry(a) for a in state.applications.values())
        elfs = tuple(
            RegistryEntry(
                lf.aid, LoadFileLifeCycle.LOADED, None, None, lf.associated_sd, lf.version, tuple(lf.modules)
            )
            for lf in state.load_files.values()
        )
        return cls(
            state.life_cycle,
            apps,
            elfs,
            {a.aid: tuple(a.personalization) for a in state.applications.values()},
            {a.aid: tuple(sorted(a.keys.sets)) for a in state.applications.values() if a.is_security_domain},
        )

    def get(self, aid: bytes) -> RegistryEntry | None:
        for e in self.applications + self.load_files:
            if e.aid == aid:
                return e
        return None

    def __contains__(self, aid: object) -> bool:
        return isinstance(aid, bytes) and self.get(aid) is not None
