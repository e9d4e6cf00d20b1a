"""Behaviour of gp.scp03: HostSession <-> CardSession round trips and the failure paths."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gp.errors import GPError, UsageError
from gp.scp03 import (
    C_MAC,
    R_ENCRYPTION,
    R_MAC,
    VALID_SECURITY_LEVELS,
    CardSession,
    HostSession,
    SCP03Error,
    StaticKeys,
    decrypt_dek,
    encrypt_dek,
    encrypt_key_component,
    kcv,
    pseudo_random_card_challenge,
)

AID = bytes.fromhex("A000000151000000")
ALL_I = 0x70  # pseudo-random challenge, R-MAC and R-ENC support


def make_keys(length: int, seed: int = 1) -> StaticKeys:
    base = bytes((seed + i) & 0xFF for i in range(length))
    return StaticKeys(base, bytes(b ^ 0x55 for b in base), bytes(b ^ 0xAA for b in base))


def open_pair(
    keys: StaticKeys, *, level: int, s16: bool = False, pseudo: bool = True, counter: int = 7
) -> tuple[HostSession, CardSession]:
    host = HostSession(
        keys, security_level=level, host_challenge=os.urandom(16 if s16 else 8), key_version=0x30
    )
    command = host.initialize_update()
    i_param = 0x60 | (0x10 if pseudo else 0) | (0x01 if s16 else 0)
    card, response = CardSession.begin(
        keys,
        host_challenge=command[5:-1],
        key_version=0x30,
        i_param=i_param,
        sequence_counter=counter,
        aid=AID,
    )
    assert card.external_authenticate(host.external_authenticate(response)) == 0x9000
    return host, card


# Plain commands of each ISO case, with what the application answers.
EXCHANGES: list[tuple[bytes, bytes, int]] = [
    (bytes.fromhex("80F22002"), b"", 0x9000),  # case 1
    (bytes.fromhex("80CA006600"), bytes(range(40)), 0x9000),  # case 2
    (bytes.fromhex("80F220020A4F0212345C054F9F70C5"), b"", 0x6A88),  # case 3, error SW
    (bytes.fromhex("80F28002024F0000"), b"\xe3\x00" * 30, 0x6310),  # case 4, warning SW
    (bytes.fromhex("80E60C0010") + bytes(16), b"\x00", 0x9000),  # block-aligned data
    (bytes.fromhex("80CA00E000"), b"", 0x6985),  # error SW, then the session goes on
    (bytes.fromhex("80CA006600"), b"\x01", 0x6200),  # warning SW with data
    (bytes.fromhex("80F2400200"), b"", 0x9000),  # case 2, empty 9000 answer
]


def expected_plain_response(level: int, data: bytes, sw: int) -> bytes:
    protected = sw == 0x9000 or sw >> 8 in (0x62, 0x63)
    if level & R_MAC and not protected:
        return sw.to_bytes(2, "big")  # error status words travel bare (Amd D §6.2.5)
    return data + sw.to_bytes(2, "big")


COMBINATIONS = list(
    itertools.product((16, 24, 32), (False, True), sorted(VALID_SECURITY_LEVELS), (False, True))
)


@pytest.mark.parametrize(
    ("key_length", "s16", "level", "pseudo"),
    COMBINATIONS,
    ids=[
        f"AES{8 * k}-{'S16' if s else 'S8'}-L{lv:02X}-{'pseudo' if p else 'random'}"
        for k, s, lv, p in COMBINATIONS
    ],
)
def test_host_and_card_agree_on_every_command_and_response(
    key_length: int, s16: bool, level: int, pseudo: bool
) -> None:
    # given
    host, card = open_pair(make_keys(key_length), level=level, s16=s16, pseudo=pseudo)
    assert host.security_level == card.security_level == level
    assert host.s16 == card.s16 == s16
    assert host.sequence_counter == (7 if pseudo else None)
    for plain, data, sw in EXCHANGES:
        # when
        wrapped = host.wrap(plain)
        received = card.unwrap_command(wrapped)
        response = card.wrap_response(data, sw)
        # then
        assert received == plain
        assert host.unwrap(response) == expected_plain_response(level, data, sw)
        assert host.mac_chaining_value == card.mac_chaining_value
        assert host.encryption_counter == card.encryption_counter
    assert card.encryption_counter == len(EXCHANGES)


def test_wrapped_commands_carry_the_c_mac_and_hide_data_under_c_decryption() -> None:
    host, _ = open_pair(make_keys(16), level=0x03)
    wrapped = host.wrap(bytes.fromhex("80E2900003010203"))
    assert wrapped[0] == 0x84
    assert wrapped[4] == 16 + 8  # one padded block and an 8-byte C-MAC
    assert b"\x01\x02\x03" not in wrapped


def test_s16_mode_uses_sixteen_byte_macs_and_cryptograms() -> None:
    host = HostSession(make_keys(32), security_level=0x01, host_challenge=bytes(16))
    card, response = CardSession.begin(
        make_keys(32), host_challenge=bytes(16), key_version=1, i_param=0x01, sequence_counter=0, aid=AID
    )
    assert len(response) == 10 + 3 + 16 + 16
    ext_auth = host.external_authenticate(response)
    assert ext_auth[4] == 0x20
    assert card.external_authenticate(ext_auth) == 0x9000
    assert len(host.wrap(bytes.fromhex("80F22002"))) == 5 + 16


def test_pseudo_random_challenge_is_derived_from_counter_and_aid() -> None:
    keys = make_keys(16)
    _, first = CardSession.begin(
        keys, host_challenge=bytes(8), key_version=1, i_param=0x10, sequence_counter=1, aid=AID
    )
    _, second = CardSession.begin(
        keys, host_challenge=bytes(8), key_version=1, i_param=0x10, sequence_counter=2, aid=AID
    )
    assert first[13:21] == pseudo_random_card_challenge(keys.enc, 1, AID)
    assert second[13:21] != first[13:21]
    assert first[-3:] == b"\x00\x00\x01"


def test_random_challenge_sessions_omit_the_sequence_counter() -> None:
    _, response = CardSession.begin(
        make_keys(16), host_challenge=bytes(8), key_version=1, i_param=0x00, sequence_counter=99, aid=AID
    )
    assert len(response) == 29
    assert response[10:13] == b"\x01\x03\x00"


def test_host_rejects_a_card_cryptogram_made_with_other_keys() -> None:
    host = HostSession(make_keys(16, seed=1), security_level=0x01, host_challenge=bytes(8))
    _, response = CardSession.begin(
        make_keys(16, seed=2),
        host_challenge=bytes(8),
        key_version=1,
        i_param=0x00,
        sequence_counter=0,
        aid=AID,
    )
    with pytest.raises(SCP03Error, match="card cryptogram"):
        host.external_authenticate(response)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r[:-1], "has 28 bytes"),
        (lambda r: r[:11] + b"\x02" + r[12:], "SCP02"),
        (lambda r: r[:12] + b"\x01" + r[13:], "S8"),
        (lambda r: r[:12] + b"\x10" + r[13:], "sequence counter"),
    ],
    ids=["truncated", "not-scp03", "s16-flag-with-s8-challenge", "pseudo-random-without-counter"],
)
def test_host_rejects_malformed_initialize_update_responses(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    host = HostSession(make_keys(16), security_level=0x01, host_challenge=bytes(8))
    _, response = CardSession.begin(
        make_keys(16), host_challenge=bytes(8), key_version=1, i_param=0x00, sequence_counter=0, aid=AID
    )
    with pytest.raises(SCP03Error, match=reason):
        host.external_authenticate(mutate(response))


def test_host_refuses_r_mac_when_the_card_does_not_offer_it() -> None:
    host = HostSession(make_keys(16), security_level=0x11, host_challenge=bytes(8))
    _, response = CardSession.begin(
        make_keys(16), host_challenge=bytes(8), key_version=1, i_param=0x00, sequence_counter=0, aid=AID
    )
    with pytest.raises(SCP03Error, match="does not support"):
        host.external_authenticate(response)


def _card_and_ext_auth(level: int = 0x01) -> tuple[CardSession, bytes]:
    keys = make_keys(16)
    host = HostSession(keys, security_level=level, host_challenge=bytes(8))
    card, response = CardSession.begin(
        keys, host_challenge=bytes(8), key_version=1, i_param=0x70, sequence_counter=3, aid=AID
    )
    return card, host.external_authenticate(response)


def test_card_answers_6300_to_a_wrong_host_cryptogram() -> None:
    card, ext_auth = _card_and_ext_auth()
    tampered = ext_auth[:5] + bytes([ext_auth[5] ^ 1]) + ext_auth[6:]
    assert card.external_authenticate(tampered) == 0x6300
    assert not card.authenticated


def test_card_answers_6982_to_a_wrong_external_authenticate_mac() -> None:
    card, ext_auth = _card_and_ext_auth()
    assert card.external_authenticate(ext_auth[:-1] + bytes([ext_auth[-1] ^ 1])) == 0x6982


def test_card_answers_6a86_to_an_invalid_security_level() -> None:
    card, ext_auth = _card_and_ext_auth()
    assert card.external_authenticate(ext_auth[:2] + b"\x02" + ext_auth[3:]) == 0x6A86


def test_card_answers_6985_to_a_second_external_authenticate() -> None:
    card, ext_auth = _card_and_ext_auth()
    assert card.external_authenticate(ext_auth) == 0x9000
    assert card.external_authenticate(ext_auth) == 0x6985


def test_card_rejects_r_mac_levels_its_i_parameter_does_not_offer() -> None:
    keys = make_keys(16)
    card, response = CardSession.begin(
        keys, host_challenge=bytes(8), key_version=1, i_param=0x20, sequence_counter=0, aid=AID
    )
    host = HostSession(keys, security_level=0x11, host_challenge=bytes(8))
    ext_auth = host.external_authenticate(response)
    # the host asks for R-MAC only (supported); rewriting P1 to 33 (R-ENC) must be refused
    assert card.external_authenticate(ext_auth[:2] + b"\x33" + ext_auth[3:]) == 0x6A86


def test_card_aborts_the_session_on_a_bad_c_mac_and_rejects_what_follows() -> None:
    host, card = open_pair(make_keys(16), level=0x01)
    wrapped = host.wrap(bytes.fromhex("80F22002"))
    with pytest.raises(SCP03Error) as caught:
        card.unwrap_command(wrapped[:-1] + bytes([wrapped[-1] ^ 0x80]))
    assert caught.value.sw == 0x6982
    assert card.aborted and not card.authenticated and card.security_level == 0
    with pytest.raises(SCP03Error):
        card.unwrap_command(host.wrap(bytes.fromhex("80F22002")))
    assert card.wrap_response(b"", 0x6982) == b"\x69\x82"


def test_card_rejects_a_replayed_command() -> None:
    host, card = open_pair(make_keys(16), level=0x01)
    wrapped = host.wrap(bytes.fromhex("80F22002"))
    card.unwrap_command(wrapped)
    with pytest.raises(SCP03Error):
        card.unwrap_command(wrapped)


def test_card_rejects_a_plain_command_once_c_mac_is_required() -> None:
    _, card = open_pair(make_keys(16), level=0x01)
    with pytest.raises(SCP03Error) as caught:
        card.unwrap_command(bytes.fromhex("80F22002"))
    assert caught.value.sw == 0x6982


def test_host_rejects_a_tampered_r_mac() -> None:
    host, card = open_pair(make_keys(16), level=0x11)
    card.unwrap_command(host.wrap(bytes.fromhex("80CA006600")))
    response = bytearray(card.wrap_response(b"\x01\x02", 0x9000))
    response[0] ^= 1
    with pytest.raises(SCP03Error, match="R-MAC"):
        host.unwrap(bytes(response))


def test_host_rejects_a_success_response_without_r_mac() -> None:
    host, card = open_pair(make_keys(16), level=0x11)
    card.unwrap_command(host.wrap(bytes.fromhex("80CA006600")))
    with pytest.raises(SCP03Error):
        host.unwrap(b"\x90\x00")


def test_level_zero_sessions_pass_commands_through_unchanged() -> None:
    host, card = open_pair(make_keys(16), level=0x00)
    command = bytes.fromhex("80F28002024F0000")
    assert host.wrap(command) == command
    assert card.unwrap_command(command) == command
    assert host.unwrap(card.wrap_response(b"\xe3\x00", 0x9000)) == b"\xe3\x00\x90\x00"


@pytest.mark.parametrize("channel", [1, 3, 4, 19])
def test_commands_on_logical_channels_are_macd_without_the_channel_number(channel: int) -> None:
    # given
    host, card = open_pair(make_keys(16), level=0x33)
    plain = bytes.fromhex("80F28002024F0000")
    on_channel = bytes([0x80 | channel if channel < 4 else 0xC0 | (channel - 4)]) + plain[1:]
    # when
    wrapped = host.wrap(on_channel)
    # then: SM indicated in the channel's own coding (b3, or b6 for channels 4-19)
    assert wrapped[0] == (0x84 | channel if channel < 4 else 0xE0 | (channel - 4))
    assert card.unwrap_command(wrapped) == on_channel


def test_extended_length_commands_round_trip() -> None:
    host, card = open_pair(make_keys(16), level=0x03)
    plain = bytes.fromhex("80E80000") + b"\x00" + (600).to_bytes(2, "big") + bytes(range(256)) * 2 + bytes(88)
    wrapped = host.wrap(plain)
    assert wrapped[4] == 0x00
    assert card.unwrap_command(wrapped) == plain


def test_commands_already_marked_secure_are_refused_by_the_host() -> None:
    host, _ = open_pair(make_keys(16), level=0x01)
    with pytest.raises(UsageError):
        host.wrap(bytes.fromhex("84F22002"))


def test_host_needs_an_authenticated_session_before_wrapping() -> None:
    host = HostSession(make_keys(16), security_level=0x01, host_challenge=bytes(8))
    with pytest.raises(SCP03Error):
        host.wrap(bytes.fromhex("80F22002"))


def test_card_answers_6700_when_the_host_challenge_length_does_not_fit_the_mode() -> None:
    with pytest.raises(SCP03Error) as caught:
        CardSession.begin(
            make_keys(16), host_challenge=bytes(8), key_version=1, i_param=0x01, sequence_counter=0, aid=AID
        )
    assert caught.value.sw == 0x6700


def test_card_answers_6985_when_the_sequence_counter_is_exhausted() -> None:
    with pytest.raises(SCP03Error) as caught:
        CardSession.begin(
            make_keys(16),
            host_challenge=bytes(8),
            key_version=1,
            i_param=0x10,
            sequence_counter=1 << 24,
            aid=AID,
        )
    assert caught.value.sw == 0x6985


def test_card_passes_plain_commands_before_any_session() -> None:
    card, _ = _card_and_ext_auth()
    assert card.unwrap_command(bytes.fromhex("00A4040000")) == bytes.fromhex("00A4040000")
    assert card.wrap_response(b"\x6f\x00", 0x9000) == b"\x6f\x00\x90\x00"


def test_external_authenticate_response_carries_no_r_mac() -> None:
    card, ext_auth = _card_and_ext_auth(level=0x11)
    assert card.external_authenticate(ext_auth) == 0x9000
    assert card.wrap_response(b"", 0x9000) == b"\x90\x00"


@pytest.mark.parametrize("level", [0x02, 0x10, 0x20, 0x31, 0xFF])
def test_host_refuses_invalid_security_levels(level: int) -> None:
    with pytest.raises(UsageError):
        HostSession(make_keys(16), security_level=level, host_challenge=bytes(8))


def test_static_keys_must_share_one_aes_length() -> None:
    with pytest.raises(UsageError):
        StaticKeys(bytes(16), bytes(16), bytes(24))
    with pytest.raises(UsageError):
        StaticKeys(bytes(15), bytes(15), bytes(15))


def test_reprs_show_key_check_values_never_key_bytes() -> None:
    keys = make_keys(16)
    host, card = open_pair(keys, level=0x33)
    texts = [repr(keys), repr(host), repr(card), repr(host.session_keys), str(host.__dict__.keys())]
    for secret in (keys.enc, keys.mac, keys.dek, *vars(host.session_keys).values()):
        if isinstance(secret, bytes):
            for text in texts:
                assert secret.hex() not in text.lower()
    assert kcv(keys.enc).hex().upper() in repr(keys)


def test_error_messages_never_contain_key_material() -> None:
    keys = make_keys(16)
    host = HostSession(keys, security_level=0x01, host_challenge=bytes(8))
    _, response = CardSession.begin(
        make_keys(16, seed=9), host_challenge=bytes(8), key_version=1, i_param=0, sequence_counter=0, aid=AID
    )
    with pytest.raises(SCP03Error) as caught:
        host.external_authenticate(response)
    assert keys.mac.hex() not in str(caught.value).lower()


def test_scp03_errors_belong_to_the_gp_hierarchy() -> None:
    assert issubclass(SCP03Error, GPError)


def test_dek_round_trips_key_components_and_card_decrypts_them() -> None:
    keys = make_keys(24)
    host, card = open_pair(keys, level=0x03)
    new_key = os.urandom(24)
    block = encrypt_key_component(keys.dek, new_key, padding=bytes(8))
    assert len(block) == 32
    assert card.decrypt_sensitive(block)[:24] == new_key
    assert decrypt_dek(keys.dek, encrypt_dek(keys.dek, bytes(32))) == bytes(32)
    with pytest.raises(SCP03Error) as caught:
        decrypt_dek(keys.dek, bytes(15))
    assert caught.value.sw == 0x6A80


def test_counter_advances_for_commands_without_data() -> None:
    host, card = open_pair(make_keys(16), level=0x03)
    for _ in range(3):
        card.unwrap_command(host.wrap(bytes.fromhex("80F22002")))
    assert host.encryption_counter == card.encryption_counter == 3
    assert card.unwrap_command(host.wrap(bytes.fromhex("80E2900001AA"))) == bytes.fromhex("80E2900001AA")


def test_r_encryption_level_encrypts_success_responses_only() -> None:
    host, card = open_pair(make_keys(16), level=R_ENCRYPTION | R_MAC | 0x03)
    card.unwrap_command(host.wrap(bytes.fromhex("80CA006600")))
    response = card.wrap_response(b"secret-ish", 0x9000)
    assert b"secret-ish" not in response and len(response) == 16 + 8 + 2
    card.unwrap_command(host.wrap(bytes.fromhex("80CA006600")))
    assert card.wrap_response(b"ignored", 0x6A88) == b"\x6a\x88"
    assert C_MAC & host.security_level


# --- fuzzing the card's attack surface ----------------------------------------------------------

_FUZZ_KEYS = make_keys(16)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(VALID_SECURITY_LEVELS)))
def test_card_meets_arbitrary_command_bytes_with_gp_errors_only(raw: bytes, level: int) -> None:
    host, card = open_pair(_FUZZ_KEYS, level=level)
    try:
        card.unwrap_command(raw)
    except GPError:
        pass
    response = card.wrap_response(b"", 0x9000)
    try:
        host.unwrap(response)
    except GPError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64))
def test_card_answers_arbitrary_external_authenticate_bytes_with_a_status_word(raw: bytes) -> None:
    card, _ = _card_and_ext_auth()
    assert card.external_authenticate(raw) in {0x9000, 0x6300, 0x6700, 0x6982, 0x6A86, 0x6D00, 0x6E00}


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80))
def test_host_meets_arbitrary_initialize_update_responses_with_scp03_errors_only(raw: bytes) -> None:
    host = HostSession(_FUZZ_KEYS, security_level=0x33, host_challenge=bytes(8))
    with pytest.raises(SCP03Error):
        host.external_authenticate(raw)
