"""DELETE (GP Card Spec v2.3.1 §11.2): keys (§11.2.2.2, Table 11-23) and card content (§9.5 content
removal: applications, load files, related deletion of an SD and what is associated with it).
"""

from __future__ import annotations

from collections.abc import Set

from gp.apdu import CommandAPDU
from gp.card.registry import descendants, has_authority
from gp.card.sd.authorization import _authorize_management, _confirmation
from gp.card.sd.common import (
    SW_CONDITIONS,
    SW_NOT_FOUND,
    SW_SECURITY,
    CardError,
    ChannelContext,
    _lv,
    _parse_error_sw,
    _require_auth,
    _require_operational,
)
from gp.card.state import (
    Application,
    CardState,
    LoadFile,
)
from gp.commands.keys import DeleteKey, DeleteObject, parse_delete
from gp.commands.types import AID, Privileges
from gp.errors import ParseError


def _delete(
    state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU, selected: Set[AID]
) -> bytes:
    _require_auth(ctx)
    _require_operational(state)
    try:
        dcmd, _more = parse_delete(cmd)
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    if isinstance(dcmd, DeleteKey):
        return _delete_key(sd, dcmd)
    dtbs = dcmd.token_data()
    delegated = _authorize_management(state, sd, dtbs, dcmd.token)
    return _delete_object(state, sd, dcmd, selected, delegated)


def _delete_key(sd: Application, dcmd: DeleteKey) -> bytes:
    found = False
    for kvn in list(sd.keys.sets):
        if dcmd.kvn is not None and kvn != dcmd.kvn:
            continue
        ks = sd.keys.sets[kvn]
        if dcmd.kid is None:
            del sd.keys.sets[kvn]
            found = True
            continue
        if dcmd.kid in ks.keys:
            del ks.keys[dcmd.kid]
            found = True
            if not ks.keys:
                del sd.keys.sets[kvn]
    if not found:
        raise CardError(SW_NOT_FOUND, "key not found")
    return b"\x00"


def _delete_object(
    state: CardState, sd: Application, dcmd: DeleteObject, selected: Set[AID], delegated: bool
) -> bytes:
    aid = dcmd.aid
    if aid == state.isd_aid:
        raise CardError(SW_CONDITIONS, "the ISD cannot be deleted")
    app = state.applications.get(aid)
    elf = state.load_files.get(aid)
    if app is None and elf is None:
        raise CardError(SW_NOT_FOUND, "no such application or load file")
    owner = app.associated_sd if app is not None else elf.associated_sd  # type: ignore[union-attr]
    if not (sd.has(Privileges.GLOBAL_DELETE) or has_authority(state, sd, owner)):
        raise CardError(SW_SECURITY, "object not under this Security Domain")
    doomed_apps: list[Application] = []
    doomed_elfs: list[LoadFile] = []
    if app is not None:
        doomed_apps.append(app)
        if app.is_security_domain:
            below_apps, below_elfs = descendants(state, app.aid)
            if (below_apps or below_elfs) and not dcmd.related:
                raise CardError(SW_CONDITIONS, "Security Domain still has associated content")
            doomed_apps += below_apps
            doomed_elfs += below_elfs
    else:
        assert elf is not None
        if elf.in_rom:
            raise CardError(SW_CONDITIONS, "load file in ROM cannot be deleted")
        doomed_elfs.append(elf)
        instances = [a for a in state.applications.values() if a.load_file_aid == elf.aid]
        if instances and not dcmd.related:
            raise CardError(SW_CONDITIONS, "load file still has application instances")
        for inst in instances:
            doomed_apps.append(inst)
            if inst.is_security_domain:
                below_apps, below_elfs = descendants(state, inst.aid)
                if below_apps or below_elfs:
                    raise CardError(SW_CONDITIONS, "an instance is a Security Domain with content")
    # instances of load files being deleted go too (related deletion of an SD's load files)
    for lf in list(doomed_elfs):
        for inst in state.applications.values():
            if inst.load_file_aid == lf.aid and inst not in doomed_apps:
                raise CardError(SW_CONDITIONS, f"load file {lf.aid} has instances outside the deletion")
    if any(a.aid in selected for a in doomed_apps) or any(a.aid == sd.aid for a in doomed_apps):
        raise CardError(SW_CONDITIONS, "an application to delete is currently selected")
    for a in doomed_apps:
        state.applications.pop(a.aid, None)
    for lf in doomed_elfs:
        state.load_files.pop(lf.aid, None)
    return _confirmation(state, sd, delegated, _lv(aid))
