"""INSTALL on a Security Domain (GP Card Spec v2.3.1 §11.5).

[for load] (§9.3.5 preparation of LOAD), [for install] and [for make selectable] (§9.3 card content
installation, §6.6 privileges: §6.6.1 consistency, issuer-only privileges), [for extradition]
(§9.4), [for registry update] (§9.5, §11.5.2.3.6) and [for personalization] (§7.3.2, routing the
following STORE DATA / PUT KEY to an application).
"""

from __future__ import annotations

from gp.apdu import CommandAPDU
from gp.card.registry import descendants, has_authority
from gp.card.sd.authorization import _authorize_management, _confirmation
from gp.card.sd.common import (
    _ISSUER_ONLY,
    SD_MODULE_AID,
    SW_CONDITIONS,
    SW_NOT_FOUND,
    SW_SECURITY,
    SW_WRONG_DATA,
    CardError,
    ChannelContext,
    LoadInProgress,
    _check_memory,
    _lv,
    _parse_error_sw,
    _require_auth,
    _require_operational,
)
from gp.card.state import (
    Application,
    CardState,
)
from gp.commands import install as ins
from gp.commands.types import CardLifeCycle, LifeCycle, Privileges
from gp.errors import ParseError


def _install(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    try:
        icmd, _more = ins.parse_install(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    if isinstance(icmd, ins.InstallForPersonalization):
        return _install_for_personalization(state, ctx, sd, icmd)
    _require_operational(state)
    delegated = _authorize_management(state, sd, icmd.token_data(), icmd.token)
    if isinstance(icmd, ins.InstallForLoad):
        return _install_for_load(state, ctx, sd, icmd, delegated)
    if isinstance(icmd, ins.InstallForInstall):
        return _install_for_install(state, sd, icmd, delegated)
    if isinstance(icmd, ins.InstallForMakeSelectable):
        return _make_selectable(state, sd, icmd, delegated)
    if isinstance(icmd, ins.InstallForExtradition):
        return _extradite(state, sd, icmd, delegated)
    return _registry_update(state, sd, icmd, delegated)


def _check_grant(state: CardState, sd: Application, privileges: Privileges) -> None:
    problem = privileges.consistency_error()
    if problem:
        raise CardError(SW_WRONG_DATA, problem)
    if sd.aid != state.isd_aid and privileges & _ISSUER_ONLY:
        raise CardError(SW_SECURITY, "only the ISD grants card-wide privileges")


def _install_for_load(
    state: CardState, ctx: ChannelContext, sd: Application, icmd: ins.InstallForLoad, delegated: bool
) -> bytes:
    if icmd.load_file_aid in state.load_files or icmd.load_file_aid in state.applications:
        raise CardError(SW_CONDITIONS, "AID already present in the registry")
    target_aid = icmd.security_domain_aid or sd.aid
    target = state.applications.get(target_aid)
    if target is None or not target.is_security_domain:
        raise CardError(SW_NOT_FOUND, "associated Security Domain not found")
    if target.aid != sd.aid and not has_authority(state, sd, target.aid):
        raise CardError(SW_SECURITY, "cannot load for a Security Domain outside this hierarchy")
    if target.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "associated Security Domain is locked")
    if icmd.load_file_hash and len(icmd.load_file_hash) not in (20, 32, 48, 64):
        raise CardError(SW_WRONG_DATA, "load file data block hash of unknown length")
    size_hint = icmd.parameters.size_hint()
    _check_memory(state, size_hint)
    ctx.load = LoadInProgress(icmd.load_file_aid, target.aid, icmd.load_file_hash, size_hint)
    ctx.load.delegated = delegated
    return b"\x00"


def _install_for_install(
    state: CardState, sd: Application, icmd: ins.InstallForInstall, delegated: bool
) -> bytes:
    elf = state.load_files.get(icmd.load_file_aid)
    if elf is None:
        raise CardError(SW_NOT_FOUND, "executable load file not found")
    if icmd.module_aid not in elf.modules:
        raise CardError(SW_NOT_FOUND, "executable module not found in the load file")
    if icmd.application_aid in state.applications or icmd.application_aid in state.load_files:
        raise CardError(SW_CONDITIONS, "AID already present in the registry")
    privileges = icmd.privileges
    _check_grant(state, sd, privileges)
    is_sd_module = icmd.module_aid == SD_MODULE_AID
    if privileges.is_security_domain != is_sd_module:
        raise CardError(SW_WRONG_DATA, "Security Domain privilege and module disagree")
    if privileges & Privileges.CARD_RESET and not icmd.make_selectable:
        raise CardError(SW_WRONG_DATA, "Card Reset needs [for make selectable]")
    if privileges & Privileges.CARD_RESET and any(
        a.has(Privileges.CARD_RESET) for a in state.applications.values() if a.aid != state.isd_aid
    ):
        raise CardError(SW_CONDITIONS, "another application already has the Card Reset privilege")
    if sd.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "Security Domain is locked")
    quota = (icmd.parameters.quota(0xC8) or 0) + (icmd.parameters.quota(0xD8) or 0)
    _check_memory(state, quota)
    lc = LifeCycle(0x07) if icmd.make_selectable else LifeCycle(0x03)
    state.applications[icmd.application_aid] = Application(
        icmd.application_aid,
        icmd.load_file_aid,
        icmd.module_aid,
        privileges,
        lc,
        sd.aid,
        icmd.parameters.encode(),
        reserved_memory=quota,
    )
    return _confirmation(state, sd, delegated, _lv(icmd.load_file_aid) + _lv(icmd.application_aid))


def _make_selectable(
    state: CardState, sd: Application, icmd: ins.InstallForMakeSelectable, delegated: bool
) -> bytes:
    app = state.applications.get(icmd.application_aid)
    if app is None or app.aid == state.isd_aid:
        raise CardError(SW_NOT_FOUND, "application not found")
    if not has_authority(state, sd, app.associated_sd):
        raise CardError(SW_SECURITY, "application not under this Security Domain")
    if not app.life_cycle.installed_only or app.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "application is not in the INSTALLED state")
    extra = icmd.privileges & ~(
        Privileges.CARD_RESET | Privileges.CONTACTLESS_ACTIVATION | Privileges.CONTACTLESS_SELF_ACTIVATION
    )
    if extra:
        raise CardError(SW_WRONG_DATA, "make selectable may only add Card Reset / contactless privileges")
    app.privileges |= icmd.privileges
    app.life_cycle = LifeCycle(0x07)
    return _confirmation(state, sd, delegated, _lv(app.load_file_aid) + _lv(app.aid))


def _extradite(state: CardState, sd: Application, icmd: ins.InstallForExtradition, delegated: bool) -> bytes:
    target = state.applications.get(icmd.security_domain_aid)
    if target is None:
        raise CardError(SW_NOT_FOUND, "target Security Domain not found")
    if not target.is_security_domain:
        raise CardError(SW_WRONG_DATA, "extradition target is not a Security Domain")
    if target.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "target Security Domain is locked")
    app = state.applications.get(icmd.aid)
    elf = state.load_files.get(icmd.aid)
    if app is None and elf is None:
        raise CardError(SW_NOT_FOUND, "application or load file not found")
    if app is not None:
        if app.aid == state.isd_aid:
            raise CardError(SW_CONDITIONS, "the ISD cannot be extradited")
        if not has_authority(state, sd, app.associated_sd):
            raise CardError(SW_SECURITY, "application not under this Security Domain")
        if app.is_security_domain and target.aid != app.aid:
            below, _ = descendants(state, app.aid)
            if any(d.aid == target.aid for d in below):
                raise CardError(SW_CONDITIONS, "extradition would create a cycle in the SD hierarchy")
        app.associated_sd = target.aid
    elif elf is not None:
        if elf.in_rom:
            raise CardError(SW_CONDITIONS, "load file in ROM cannot be extradited")
        if not has_authority(state, sd, elf.associated_sd):
            raise CardError(SW_SECURITY, "load file not under this Security Domain")
        if target.has(Privileges.DAP_VERIFICATION):
            raise CardError(SW_CONDITIONS, "load files cannot go to an SD with DAP Verification (§9.4.1)")
        elf.associated_sd = target.aid
    return _confirmation(state, sd, delegated, _lv(target.aid) + _lv(icmd.aid))


def _registry_update(
    state: CardState, sd: Application, icmd: ins.InstallForRegistryUpdate, delegated: bool
) -> bytes:
    if icmd.application_aid is None:
        raise CardError(SW_WRONG_DATA, "registry update needs an application AID")
    app = state.applications.get(icmd.application_aid)
    if app is None:
        raise CardError(SW_NOT_FOUND, "application not found")
    if app.aid == state.isd_aid and sd.aid != state.isd_aid:
        raise CardError(SW_SECURITY, "only the ISD updates its own entry")
    if not has_authority(state, sd, app.associated_sd) and app.aid != state.isd_aid:
        raise CardError(SW_SECURITY, "application not under this Security Domain")
    if icmd.privileges is not None:
        if icmd.privileges.is_security_domain != app.is_security_domain:
            raise CardError(SW_WRONG_DATA, "the Security Domain privilege cannot change")
        _check_grant(state, sd, icmd.privileges)
        app.privileges = icmd.privileges
    if icmd.security_domain_aid is not None:
        _extradite(state, sd, ins.InstallForExtradition(icmd.security_domain_aid, app.aid), delegated)
    return _confirmation(state, sd, delegated, _lv(app.aid))


def _install_for_personalization(
    state: CardState, ctx: ChannelContext, sd: Application, icmd: ins.InstallForPersonalization
) -> bytes:
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    app = state.applications.get(icmd.application_aid)
    if app is None or app.aid == state.isd_aid:
        raise CardError(SW_NOT_FOUND, "application not found")
    if app.associated_sd != sd.aid:
        raise CardError(SW_SECURITY, "application is not associated with this Security Domain")
    if ctx.oce_session and not app.is_security_domain:
        raise CardError(SW_SECURITY, "an OCE session personalises Security Domains' keys only")
    if app.life_cycle.locked:
        raise CardError(SW_CONDITIONS, "application is locked")
    ctx.perso_target = app.aid
    ctx.store_next_block = 0
    ctx.key_package = None
    return b"\x00"
