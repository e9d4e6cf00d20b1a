"""PUT KEY (GP Card Spec v2.3.1 §11.8; Amendment D v1.2 §7.2 for SCP03 key sets): add or replace a
key set on the selected SD, or on the SD targeted by INSTALL [for personalization] (§7.3.2);
key components arrive encrypted under the session's sensitive-data key (Amd D §6.2.8) and the
new set's sequence counter starts again (Amd D §6.2.2.1).
"""

from __future__ import annotations

from gp.apdu import CommandAPDU
from gp.card.sd.common import (
    SW_CONDITIONS,
    SW_NO_MEMORY,
    SW_NOT_FOUND,
    SW_SECURITY,
    SW_WRONG_DATA,
    CardError,
    ChannelContext,
    _parse_error_sw,
    _require_auth,
)
from gp.card.state import (
    INITIAL_SEQUENCE_COUNTER,
    MAX_KEY_SETS,
    Application,
    CardState,
    Key,
    KeySet,
)
from gp.commands.keys import KeyCheckError, PutKey, PutKeyResponse
from gp.commands.types import CardLifeCycle
from gp.errors import GPError, ParseError


def _put_key(state: CardState, ctx: ChannelContext, sd: Application, cmd: CommandAPDU) -> bytes:
    _require_auth(ctx)
    if state.life_cycle is CardLifeCycle.TERMINATED:
        raise CardError(SW_CONDITIONS, "card terminated")
    target = sd
    if ctx.perso_target is not None:
        perso = state.applications.get(ctx.perso_target)
        if perso is None or not perso.is_security_domain:
            raise CardError(SW_CONDITIONS, "PUT KEY is only forwarded to a Security Domain")
        target = perso
    if state.life_cycle is CardLifeCycle.CARD_LOCKED and target.aid != state.isd_aid:
        raise CardError(SW_CONDITIONS, "card locked")
    decrypt = ctx.decrypt
    if decrypt is None:
        raise CardError(SW_SECURITY, "no session key to decrypt key components")
    try:
        pk = PutKey.from_apdu(cmd, decrypt=decrypt)
    except KeyCheckError as e:
        raise CardError(SW_SECURITY, str(e)) from None
    except ParseError as e:
        raise CardError(_parse_error_sw(e), e.problem) from None
    except GPError as e:
        raise CardError(SW_WRONG_DATA, str(e)) from None
    store = target.keys
    if pk.replace_version == 0:
        if pk.new_version in store.sets:
            raise CardError(SW_WRONG_DATA, f"key version {pk.new_version:02X} already exists")
        if len(store.sets) >= MAX_KEY_SETS:
            raise CardError(SW_NO_MEMORY, "no room for another key set")
        keyset = KeySet(pk.new_version)
    else:
        old = store.sets.get(pk.replace_version)
        if old is None:
            raise CardError(SW_NOT_FOUND, f"key version {pk.replace_version:02X} not found")
        if pk.new_version != pk.replace_version and pk.new_version in store.sets:
            raise CardError(SW_WRONG_DATA, f"key version {pk.new_version:02X} already exists")
        keyset = KeySet(pk.new_version, dict(old.keys))
        del store.sets[pk.replace_version]
    for i, ck in enumerate(pk.keys):
        kid = pk.first_kid + i
        keyset.keys[kid] = Key(kid, ck.key_type, ck.value)
    keyset.sequence_counter = INITIAL_SEQUENCE_COUNTER
    store.sets[keyset.kvn] = keyset
    return PutKeyResponse(keyset.kvn, tuple(ck.kcv() for ck in pk.keys)).encode()
