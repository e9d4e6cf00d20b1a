"""Known-answer tests for ``gp.scp03`` against vectors published by three independent projects.

Sources (values cited, no code copied):

[pysim]   osmocom/pysim, ``tests/unittests/test_globalplatform.py`` (commit 078ac2bf19d2),
          classes ``SCP03_Test_AES{128,192,256}_{03,11,33}`` and ``SCP03_KCV_Test``.
          S8 mode, i = 70 (pseudo-random challenge, R-MAC + R-ENC support), KVN 30/31/32, ISD-R
          AID A0000005591010FFFFFFFF8900000100 (the AID is not printed in the test; the challenges
          below are reproduced from it, which also confirms Amd D §6.2.2.1).
          Each class runs its steps in order, so the encryption counter is 1 for GET EID and 2..5
          for the four ISO cases - cases 1 and 2 carry no data yet still advance it.
[omfgp]   miketlk/omfgp, ``tests/omfgp/scp03_test.py`` (commit 3fd505e1283f) for the KDF and
          pseudo-random challenge, and ``tests/omfgp/scp_test.py`` (commit 263df7ec773e) for whole
          sessions at levels 00, 01, 03, 11, 13 and 33 with key set 404142..4F (AES-128, S8),
          including a GET STATUS answered 6A88 in the middle of the session (MAC chaining goes on).
[samsung] Samsung/OpenSCP-Java, ``src/test/java/com/samsung/openscp/testdata/``
          ``SmartCardScp03Aes{128,192,256}S16ModeEmulation.java``,
          ``SmartCardScp03Aes128S8ModeEmulation.java``, ``InputTestData.java`` and
          ``OutputTestData.java`` (commit 6696c01834b7): level 33, KVN 30, AES-128/192/256, S16 and S8.
          Its emulated card does *not* derive its "pseudo-random" challenge per Amd D §6.2.2.1
          (the same S16 challenge for all three key sizes), so the host never checks it here, and the
          card-side replay below declares the challenge as given (i = 61 instead of 71): the session
          keys depend only on the two challenges, so every later byte is still Samsung's.  Its
          emulator also pads the 11-byte ISD entry to 32 bytes before R-ENC (GPCS B.2.3 gives 16):
          the host accepts that, the card replay skips comparing that one response.

Gaps no public source fills, covered only by the host <-> card round trips in test_scp03.py:
error status words in S16 mode and with AES-192/256, S16 with a challenge derived per §6.2.2.1,
and levels 00/01/13 with AES-192/256.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gp.scp03 import (
    CardSession,
    HostSession,
    StaticKeys,
    decrypt_dek,
    encrypt_dek,
    kcv,
    kdf,
    pseudo_random_card_challenge,
)

h = bytes.fromhex

# --- [pysim] ------------------------------------------------------------------------------------

PYSIM_ISD_R_AID = h("A0000005591010FFFFFFFF8900000100")
PYSIM_KEYS = {
    16: StaticKeys(
        h("000102030405060708090a0b0c0d0e0f"),
        h("101112131415161718191a1b1c1d1e1f"),
        h("202122232425262728292a2b2c2d2e2f"),
    ),
    24: StaticKeys(
        h("000102030405060708090a0b0c0d0e0f0001020304050607"),
        h("101112131415161718191a1b1c1d1e1f1011121314151617"),
        h("202122232425262728292a2b2c2d2e2f2021222324252627"),
    ),
    32: StaticKeys(
        h("000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f"),
        h("101112131415161718191a1b1c1d1e1f101112131415161718191a1b1c1d1e1f"),
        h("202122232425262728292a2b2c2d2e2f202122232425262728292a2b2c2d2e2f"),
    ),
}
PYSIM_GET_EID_PLAIN = h("80E2910006BF3E035C015A00")
PYSIM_GET_EID_RSP_PLAIN = h("bf3e125a1089882119900000000000000000000005")
PYSIM_CASES_PLAIN = [
    h("80F22002"),
    h("80ca006600"),
    h("80F220020a4f0212345c054f9f70c5"),
    h("80f28002024f0000"),
]


@dataclass(frozen=True)
class PySimVector:
    name: str
    key_length: int
    init_update_cmd: bytes
    init_update_rsp: bytes
    ext_auth_cmd: bytes
    get_eid_cmd: bytes
    get_eid_rsp: bytes
    cases: tuple[bytes, bytes, bytes, bytes]

    @property
    def host_challenge(self) -> bytes:
        return self.init_update_cmd[5:-1]

    @property
    def level(self) -> int:
        return self.ext_auth_cmd[2]

    @property
    def kvn(self) -> int:
        return self.init_update_cmd[2]

    @property
    def sequence_counter(self) -> int:
        return int.from_bytes(self.init_update_rsp[-3:], "big")


PYSIM_VECTORS = [
    PySimVector(
        "AES128_11", 16, h("8050300008b13e5f938fc108c400"),
        h("000000000000000000003003703eb51047495b249f66c484c1d2ef1948000002"),
        h("84821100107d5f5826a993ebc89eea24957fa0b3ce"), h("84e291000ebf3e035c015a558d036518a2829700"),
        h("bf3e125a1089882119900000000000000000000005971be68992dbbdfa"),
        (h("84f220020863a63f8959827fb2"), h("84ca006608a0c6a4a74166f7ce00"),
         h("84f22002124f0212345c054f9f70c52249b50272656536"), h("84f280020a4f00e91443f6dce6b8ed00")),
    ),
    PySimVector(
        "AES128_03", 16, h("80503000088e1552d0513c60f300"),
        h("0000000000000000000030037030760cd2c47c1dd395065fe5ead8a9d7000001"),
        h("8482030010fd4721a14d9b07003c451d2f8ae6bb21"),
        h("84e2910018ca9c00f6713d79bc8baa642bdff51c3f6a4082d3bd9ad26c00"),
        h("bf3e125a1089882119900000000000000000000005"),
        (h("84f2200208c9811b11f1264cf1"), h("84ca006608e10ab60b3054798800"),
         h("84f22002184e2908bdb48b2315a55482e9e936ca122d6ecfae7d17416e"),
         h("84f28002180dd10a6b6193e5340b9e77d32d5a179cd710ac2773aefb2800")),
    ),
    PySimVector(
        "AES128_33", 16, h("8050300008fdf38259a1e0de4400"),
        h("000000000000000000003003703b1aca81e821f219081cdc01c26b372d000003"),
        h("84823300108c36f96bcc00724a4e13ad591d7da3f0"),
        h("84e2910018267a85dfe4a98fca6fb0527e0dfecce4914e40401433c87f00"),
        h("f3ba2b1013aa6224f5e1c138d71805c569e5439b47576260b75fc021b25097cb2e68f8a0144975b9"),
        (h("84f2200208ac6a59024bed84cc"), h("84ca006608409912ad8fb7aed000"),
         h("84f22002185f3dafc3ac14c381536a488bf44e06d056df9d74dbd21e5a"),
         h("84f280021865165105be3373347d0424d4400af2ac393f569ec779389e00")),
    ),
    PySimVector(
        "AES192_11", 24, h("80503100087396430b768b085b00"),
        h("000000000000000000003103708cfc23522ffdbf1e5df5542cac8fd866000003"),
        h("84821100102145ed30b146f5db252fb7e624cec244"), h("84e291000ebf3e035c015aff42cf801d14394400"),
        h("bf3e125a1089882119900000000000000000000005162fbd33e04940a9"),
        (h("84f22002084584e4f6784811ee"), h("84ca006608937776ebe190fa3000"),
         h("84f22002124f0212345c054f9f70c59a52bddf3040368c"), h("84f280020a4f009804b11411f7393d00")),
    ),
    PySimVector(
        "AES192_03", 24, h("805031000869c65da8202bf19f00"),
        h("00000000000000000000310370b570a67be38446717729d6dd3d2ec5b1000001"),
        h("848203001065df4f1a356a887905466516d9e5b7c1"),
        h("84e2910018d2c6fb477c5d4afe4fd4d21f17eff10d3578ec1774a12a2d00"),
        h("bf3e125a1089882119900000000000000000000005"),
        (h("84f2200208964e188f0b1bb697"), h("84ca006608f0820035a41d3e1800"),
         h("84f220021806b076ed452cd1fa84f77f5c08a146aa77a9286757dea791"),
         h("84f2800218d06527e39222dce091fabdb8e9b898417a67a6852d3577db00")),
    ),
    PySimVector(
        "AES192_33", 24, h("80503100089b3f2eef0e8c937400"),
        h("00000000000000000000310370f6bb305a15bae1a68f79fb08212fbed7000002"),
        h("84823300109100bc22d58b45b86a26365ce39ff3cf"),
        h("84e29100188f7f946c84f70d17994bc6e8791251bb1bb1bf02cf8de58900"),
        h("c05176c1b6f72aae50c32cbee63b0e95998928fd4dfb2be9f27ffde8c8476f5909b4805cc4039599"),
        (h("84f2200208d5d97754b6b3d2ba"), h("84ca006608516c82b8e30adbeb00"),
         h("84f2200218cc247f4761e6944277a4e0d6e32e44025b1e31537e2fc668"),
         h("84f2800218ba22b63d509bef5d093b43e5eaed03ed23144ab2d9cb51de00")),
    ),
    PySimVector(
        "AES256_11", 32, h("805032000811666d57866c6f5400"),
        h("0000000000000000000032037053ea8847efa7674e41498a4d66cf0dee000003"),
        h("84821100102f2ad190eff2fafc4908996d1cebd310"), h("84e291000ebf3e035c015af4b680372542b59d00"),
        h("bf3e125a10898821199000000000000000000000058012dd7f01f1c4c1"),
        (h("84f2200208d618b7da68d5fe52"), h("84ca0066088f3e055db23ad5e500"),
         h("84f22002124f0212345c054f9f70c5b6e15cc42404915e"), h("84f280020a4f00aa124aa74afe7f7500")),
    ),
    PySimVector(
        "AES256_03", 32, h("8050320008c6066990fc426e1d00"),
        h("000000000000000000003203708682cd81bbd8919f2de3f2664581f118000001"),
        h("848203001077c493b632edadaf865a1e64acc07ce9"),
        h("84e29100183ddaa60594963befaada3525b492ede23c2ab2c1ce3afe4400"),
        h("bf3e125a1089882119900000000000000000000005"),
        (h("84f2200208480ddc8e419da38d"), h("84ca0066083e9d6a6c0b2d732000"),
         h("84f22002183ebfef2da8b04af2a85f491f299b76973df76ff08a4031be"),
         h("84f2800218783fff80990f5585b1055010ea95094a26e4a8f1ef4b18e100")),
    ),
    PySimVector(
        "AES256_33", 32, h("805032000897b2055fe58599fd00"),
        h("00000000000000000000320370a8439a22cedf045fa9f1903b2834f26e000002"),
        h("8482330010508a0fd959d2e547c6b33154a6be2057"),
        h("84e29100187a5ef717eaf1e135ae92fe54429d0e465decda65f5fe5aea00"),
        h("ea90dbfa648a67c5eb6abc57f8530b97d0cd5647c5e8732016b55203b078dd2ace7f8bc5d1c1cd99"),
        (h("84f2200208bcc5c17275545d93"), h("84ca00660804806aba9d543bb600"),
         h("84f2200218717222491556ec81a45f49ce48be33320024801a1c4cb0e0"),
         h("84f2800218561f105bccd3a1642904b251ccc1228beb80a82370a8637000")),
    ),
]  # fmt: skip


@pytest.mark.parametrize("v", PYSIM_VECTORS, ids=lambda v: v.name)
def test_host_reproduces_pysim_session_byte_for_byte(v: PySimVector) -> None:
    # given
    host = HostSession(PYSIM_KEYS[v.key_length], security_level=v.level, host_challenge=v.host_challenge,
                       key_version=v.kvn)  # fmt: skip
    # when / then
    assert host.initialize_update() == v.init_update_cmd
    assert host.external_authenticate(v.init_update_rsp) == v.ext_auth_cmd
    assert host.sequence_counter == v.sequence_counter
    assert host.wrap(PYSIM_GET_EID_PLAIN) == v.get_eid_cmd
    assert host.unwrap(v.get_eid_rsp + h("9000")) == PYSIM_GET_EID_RSP_PLAIN + h("9000")
    for plain, wrapped in zip(PYSIM_CASES_PLAIN, v.cases, strict=True):
        assert host.wrap(plain) == wrapped
    assert host.encryption_counter == 5


@pytest.mark.parametrize("v", PYSIM_VECTORS, ids=lambda v: v.name)
def test_card_reproduces_pysim_session_byte_for_byte(v: PySimVector) -> None:
    # given: the pseudo-random challenge is recomputed from the sequence counter and the ISD-R AID
    card, response = CardSession.begin(
        PYSIM_KEYS[v.key_length], host_challenge=v.host_challenge, key_version=v.kvn, i_param=0x70,
        sequence_counter=v.sequence_counter, aid=PYSIM_ISD_R_AID,
    )  # fmt: skip
    assert response == v.init_update_rsp
    # when / then
    assert card.external_authenticate(v.ext_auth_cmd) == 0x9000
    assert card.security_level == v.level
    assert card.unwrap_command(v.get_eid_cmd) == PYSIM_GET_EID_PLAIN
    assert card.wrap_response(PYSIM_GET_EID_RSP_PLAIN, 0x9000) == v.get_eid_rsp + h("9000")
    for plain, wrapped in zip(PYSIM_CASES_PLAIN, v.cases, strict=True):
        assert card.unwrap_command(wrapped) == plain
    assert card.encryption_counter == 5


@pytest.mark.parametrize("v", PYSIM_VECTORS, ids=lambda v: v.name)
def test_pseudo_random_card_challenge_matches_pysim(v: PySimVector) -> None:
    challenge = pseudo_random_card_challenge(
        PYSIM_KEYS[v.key_length].enc, v.sequence_counter, PYSIM_ISD_R_AID
    )
    assert challenge == v.init_update_rsp[13:21]


def test_key_check_values_match_pysim() -> None:
    keys = PYSIM_KEYS[16]
    assert (kcv(keys.enc), kcv(keys.mac), kcv(keys.dek)) == (h("C35280"), h("013808"), h("840DE5"))


# --- [omfgp] ------------------------------------------------------------------------------------

OMFGP_KEYS = StaticKeys(*(h("404142434445464748494A4B4C4D4E4F"),) * 3)
OMFGP_ISD_AID = h("A000000151000000")


def test_kdf_matches_omfgp_session_keys_and_cryptograms() -> None:
    key = h("404142434445464748494A4B4C4D4E4F")
    context = h("68E9C8799FF8CB46F8D89D88BA1287BF")
    s_mac = kdf(key, 0x06, context, 128)
    assert kdf(key, 0x04, context, 128) == h("3C64070C595D1D72BDEE692DA99B7AE4")
    assert s_mac == h("6E8468B74A707842E3D3696F338D2657")
    assert kdf(key, 0x07, context, 128) == h("FDD1D7C84750994815D0082734C31D88")
    assert kdf(s_mac, 0x00, context, 64) == h("9B5C9D42D5059430")
    assert kdf(s_mac, 0x01, context, 64) == h("F3C7624565B5894F")


def test_pseudo_random_card_challenge_matches_omfgp() -> None:
    aid = h("A000000018434D08090A0B0C000000")
    assert pseudo_random_card_challenge(h("404142434445464748494A4B4C4D4E4F"), 0x2A, aid) == h(
        "A3F5F144D19BE66E"
    )


def test_dek_encryption_matches_omfgp() -> None:
    plain = h(
        "8B37F9148DF4BB25956BE6310C73C8DC58EA9714FF49B643107B34C9BFF096A9"
        "4FEDD6823526ABC27A8E0B16616EEE254AB4567DD68E8CCD4C38AC563B13639C"
    )
    cipher = h(
        "014E02F68B094BE48EE05AFC1B1A14D6193BDB0EDF8171115B6643A2EA4F1459"
        "9B9EE7FB0FF02C9B7FF297E96A0F4441D5B7ABC1380A54164D39F0004D4C8016"
    )
    assert encrypt_dek(OMFGP_KEYS.dek, plain) == cipher
    assert decrypt_dek(OMFGP_KEYS.dek, cipher) == plain


# GET STATUS responses of omfgp's scp_test.py (plain forms).
_ISD_ENTRY = h("E3264F08A0000001510000009F700101C5039EFE80C407A0000001515350CC08A000000151000000")
_ELF_ENTRY = h("E3254F07A00000015153509F700101CE02FFFF8408A000000151535041CC08A000000151000000")
_ISD_ENTRY_CLEAR = h(
    "E32A4F08A0000001510000009F700107C5039EFE80C407A0000000620001CE020100CC08A000000151000000"
)


@dataclass(frozen=True)
class OmfgpStep:
    plain: bytes
    wrapped: bytes
    response_plain: bytes  # data + SW as the application sees it
    response_wire: bytes  # data + SW as it crosses the interface


@dataclass(frozen=True)
class OmfgpSession:
    name: str
    level: int
    host_challenge: bytes
    init_update_rsp: bytes
    ext_auth_data: bytes
    steps: tuple[OmfgpStep, ...]

    @property
    def i_param(self) -> int:
        return self.init_update_rsp[12]


_OK, _6A88 = h("9000"), h("6A88")

OMFGP_SESSIONS = [
    OmfgpSession(
        "level_00", 0x00, h("2E6805A2847B9844"),
        h("00008048007283073469FF0300E4A2A07404C25B33766379EE21A55CFA"), h("684C48D43FEDEFD990252090A826F975"),
        (OmfgpStep(h("80F28002024F00"), h("80F28002024F00"), _ISD_ENTRY_CLEAR + _OK, _ISD_ENTRY_CLEAR + _OK),
         OmfgpStep(h("80F24002024F00"), h("80F24002024F00"), _6A88, _6A88)),
    ),
    OmfgpSession(
        "level_01", 0x01, h("68E9C8799FF8CB46"),
        h("00008048007283073469FF0300F8D89D88BA1287BF9B5C9D42D5059430"), h("F3C7624565B5894F16EF5681573C34A2"),
        (OmfgpStep(h("80F28002024F00"), h("84F280020A4F004C4C51B5DFA7A181"), _ISD_ENTRY_CLEAR + _OK,
                   _ISD_ENTRY_CLEAR + _OK),
         OmfgpStep(h("80F24002024F00"), h("84F240020A4F002108D3E0BA43B673"), _6A88, _6A88)),
    ),
    OmfgpSession(
        "level_03", 0x03, h("CC8A0407F63066E8"),
        h("00008048007283073469FF0300EF23AAB4C343EDDE5B283674A8983749"), h("112355D07180C24547A5EB3BD470F7C5"),
        (OmfgpStep(h("80F28002024F00"), h("84F28002184EE4C1127567676E7E08833B785051FD96FDFE1EC5BD293F"),
                   _ISD_ENTRY_CLEAR + _OK, _ISD_ENTRY_CLEAR + _OK),
         OmfgpStep(h("80F24002024F00"), h("84F2400218E33CB507A6FFF09CE7A44EEB7498295D99F96B9F2470A782"),
                   _6A88, _6A88)),
    ),
    OmfgpSession(
        "level_11", 0x11, h("CB6DA009E0404A67"),
        h("0000013628140599538231037021428DA9468C2D5A8D05CE9657FBD5ED00001D"), h("CC606C998B98BF8AF0746E4F50D3F65E"),
        (OmfgpStep(h("80F28002024F00"), h("84F280020A4F002987243A9C15F44A"), _ISD_ENTRY + _OK,
                   _ISD_ENTRY + h("7D5F8BBC66683F42") + _OK),
         OmfgpStep(h("80F24002024F00"), h("84F240020A4F00EB20CB18E1CE889F"), _6A88, _6A88),
         OmfgpStep(h("80F21002024F00"), h("84F210020A4F00B334705EAFAB9FB1"), _ELF_ENTRY + _OK,
                   _ELF_ENTRY + h("4457D7641E95465F") + _OK)),
    ),
    OmfgpSession(
        "level_13", 0x13, h("F70E1C5D67085E4B"),
        h("000001362814059953823103707B9EAD94A8B88028F47137A2FB093F5E000021"), h("2E2057B873FCD25D175D4D63C5CD4CEB"),
        (OmfgpStep(h("80F28002024F00"), h("84F2800218E9170B7D79EA80AF507247375BB3F8EDE6F54FDD858BAE89"),
                   _ISD_ENTRY + _OK, _ISD_ENTRY + h("707D9895B36C6F6B") + _OK),
         OmfgpStep(h("80F24002024F00"), h("84F240021804B77FFA640854E3BA8611F944C9B99F938E8E1A5FF70E98"),
                   _6A88, _6A88),
         OmfgpStep(h("80F21002024F00"), h("84F2100218291B45B303C43B6222834BC0011A83A91BDD0CFD8BACD09B"),
                   _ELF_ENTRY + _OK, _ELF_ENTRY + h("39B68A29F735CFCC") + _OK)),
    ),
    OmfgpSession(
        "level_33", 0x33, h("0C980267C298D194"),
        h("00000136281405995382310370730BE014C03B4558A2155798D5B2C602000023"), h("9716680D938E0CE764738F77E5E39408"),
        (OmfgpStep(h("80F28002024F00"), h("84F2800218AFB12C966FF538690FA04199550D8E93AF7F2569E92DEC66"),
                   _ISD_ENTRY + _OK,
                   h("0C7A219212D7B6E7B1F602BA291660368CA6E7C959E343FDBCDA20285A5A2A52"
                     "143C8AA1ED5580A5DDB8A1D54730F461424520A6C56622FD") + _OK),
         OmfgpStep(h("80F24002024F00"), h("84F240021851EF5596042E756C67E7A031A33F88C25E0F05398B4ADFBA"),
                   _6A88, _6A88),
         OmfgpStep(h("80F21002024F00"), h("84F2100218CEB683FB79244285024670A969C17182CE2534871478DDA2"),
                   _ELF_ENTRY + _OK,
                   h("123AB3A33146D67BC317E3873631F83DFC1C680D88E8147DD9CB2899433878847B911D7678CA68"
                     "79E2FD674F02A778D56B563952AFA82611") + _OK)),
    ),
]  # fmt: skip


@pytest.mark.parametrize("s", OMFGP_SESSIONS, ids=lambda s: s.name)
def test_host_reproduces_omfgp_session_including_6a88_mid_session(s: OmfgpSession) -> None:
    host = HostSession(OMFGP_KEYS, security_level=s.level, host_challenge=s.host_challenge)
    assert host.initialize_update() == h("8050000008") + s.host_challenge + h("00")
    assert (
        host.external_authenticate(s.init_update_rsp)
        == bytes((0x84, 0x82, s.level, 0x00, 0x10)) + s.ext_auth_data
    )
    for step in s.steps:
        assert host.wrap(step.plain) == step.wrapped
        assert host.unwrap(step.response_wire) == step.response_plain


@pytest.mark.parametrize("s", OMFGP_SESSIONS, ids=lambda s: s.name)
def test_card_reproduces_omfgp_session_including_6a88_mid_session(s: OmfgpSession) -> None:
    # given: pseudo-random sessions are recomputed from counter and ISD AID; random ones take the
    # challenge the vector shows
    pseudo = bool(s.i_param & 0x10)
    card, response = CardSession.begin(
        OMFGP_KEYS, host_challenge=s.host_challenge, key_version=s.init_update_rsp[10], i_param=s.i_param,
        sequence_counter=int.from_bytes(s.init_update_rsp[-3:], "big") if pseudo else 0, aid=OMFGP_ISD_AID,
        card_challenge=None if pseudo else s.init_update_rsp[13:21],
        diversification_data=s.init_update_rsp[:10],
    )  # fmt: skip
    assert response == s.init_update_rsp
    assert card.external_authenticate(bytes((0x84, 0x82, s.level, 0x00, 0x10)) + s.ext_auth_data) == 0x9000
    # when / then: the card keeps chaining after answering 6A88
    for step in s.steps:
        assert card.unwrap_command(step.wrapped) == step.plain
        sw = int.from_bytes(step.response_plain[-2:], "big")
        assert card.wrap_response(step.response_plain[:-2], sw) == step.response_wire


# --- [samsung] ----------------------------------------------------------------------------------

SAMSUNG_KEYS = {
    16: StaticKeys(
        h("1D72CD9283FD55162722C6BEAA4DC187"), h("F4932BA02FFC3098D172790099D28382"),
        h("B4BDC610C3F6793708FF1132E2C5BF60"),
    ),
    24: StaticKeys(
        h("1D72CD9283FD55162722C6BEAA4DC1877F4C0CD0ECC15E05"), h("F4932BA02FFC3098D172790099D2838236F2E61068D56F44"),
        h("B4BDC610C3F6793708FF1132E2C5BF60523AEAC06B32F204"),
    ),
    32: StaticKeys(
        h("1D72CD9283FD55162722C6BEAA4DC1877F4C0CD0ECC15E052AAC39A99AF9AD72"),
        h("F4932BA02FFC3098D172790099D2838236F2E61068D56F4401CC0374C25AF8CB"),
        h("B4BDC610C3F6793708FF1132E2C5BF60523AEAC06B32F204B851B6CC007C8D3C"),
    ),
}  # fmt: skip
SAMSUNG_PLAIN = [
    (h("80F22000024F00"), h("08A00000015141434C010010A00000022020030101010000000000060100"
                            "10A0000002202003010101000000000011010005A0000002480100")),
    (h("80F24000024F00"), h("0AA9A8A7A6A5A4A3A2A1A00F800AA0A1A2A3A4A5A6A7A8A9070009A00000015141434C00070010A000"
                            "0002202003010301000000000011070007A00000024804000700")),
    (h("80F28000024F00"), h("08A0000001510000000F9E")),
]  # fmt: skip


@dataclass(frozen=True)
class SamsungVector:
    name: str
    key_length: int
    host_challenge: bytes
    init_update_rsp: bytes  # without SW
    ext_auth_cmd: bytes
    exchanges: tuple[tuple[bytes, bytes], ...]  # (wrapped command, wrapped response incl. SW)


SAMSUNG_VECTORS = [
    SamsungVector(
        "AES128_S8", 16, h("06F85B77251BF794"),
        h("A1A012430585513120853003709CE033FA78E6B10DDC2DBE8974C8B0DE00082A"),
        h("8482330010B08D6CE26B6CB3CCB411CF0296EB7B1D"),
        ((h("84F22000185230BA64388B4A40E0B4DA5CC1DF51C285E4020D99D5AED1"),
          h("BD3292BFB1A23C4478E37292BA1EDF438770CE472FB7611FBDBD1C981A27FA4780A81A95D93C05F9C4C"
            "94839DED0363CFEA57CE2ECFB572B26F3474DAEEBBABC202942381F9755F59000")),
         (h("84F24000181819D47B42BBE6B9449BBC2BD43A090DAC1F2F0A52D9F34B"),
          h("BB82442BB5CC8C839620615D1F163D3DDBC9357D68EF4BAD997CFBB79A24C224A89488C44B25C3B23D4"
            "89E4E58A309D438FDD6E453D0E07216541FB142B977A3A7D4C4048BBE2BA068F04A0A4A9C50BAD232F8"
            "CA8EA1F40E9000")),
         (h("84F280001809F07C3DF47956B1052951FA28211BA7BABC05C321D9B3BF"),
          h("31EB08363026463BAD10AF29F24301F1D9B8532067F9313D97FDA39BBE6B6099BEFD623E1F79FB5D9000"))),
    ),
    SamsungVector(
        "AES128_S16", 16, h("06F85B77251BF79406F85B77251BF794"),
        h("A1A012430585513120853003710617A2C34D50B562F7DECFC3DBF58A649EF733B7486D813C92E4CA61E5102F9100082A"),
        h("84823300201C6A43582F842A90D81CA4E970754664D8C0C6C340E007C5C6EBCDF4F7C065BE"),
        ((h("84F2200020EB30913C363A6C1309D13ADC765D9DF1C44F207C2941B898A290F627B05AE990"),
          h("05717C3DED78C6BB7AEE55A68E66E0D7C90473C380A60755DD7B63ECF55FD0B4067612B43A0A05CDA95"
            "E9122C91D8527A21681805C1A25AAA38994E15A6379DF66EE234701C673C32DAF5C54B11085C49000")),
         (h("84F2400020F1EC5CF268D357692CD0FAF186A1E6C79F68B473C4672C0A08F0437B16314698"),
          h("D7B658F9308D59779672CE4E5D1B8E6BD2A5A90F745788DAA817980BF84C2522B791382D5A095868C09"
            "6AC6A851A98A028CBBA7AC67D5F834F7969FE199B0DBBA12EF90E27CCF95C062D27BADAFC3B03CFB696"
            "4CCBE3FC04B54EFCD3B446B4469000")),
         (h("84F2800020A9DDD67660ECC75765C431CD69AD53A79202F01E13B24C15F4CFF4C9B335EEE5"),
          h("5A866565D1D0F35427E010043F82E8ABCA25C79A3CAA41547838978F779563FFDEA329E3ABD1CBA719A"
            "6D9C13B7D45CC9000"))),
    ),
    SamsungVector(
        "AES192_S16", 24, h("06F85B77251BF79406F85B77251BF794"),
        h("A1A012430585513120853003710617A2C34D50B562F7DECFC3DBF58A64A378671D41E7F6E3F5254CA9D4C481A400082A"),
        h("848233002099033B5BB5246C859B9748E497EDAE8D9EBB7BD196CE4E3EBFC92343D69478AB"),
        ((h("84F220002032319E399171DAF20FD8E8ECD1CE462569B7D5645AAD98E537593EF48816DB4B"),
          h("B6AB2FDB15B2D1A895B8329736C5AF47D4B6B6AECBB73E327A91D300D4BF0F36AD710F7FF5505481F69"
            "0EFE3561E1C5335EF510B018D56D21D5F1CA9557AC9E225D04413BAA39828273DBC4B00B0BF309000")),
         (h("84F2400020161D4B6C1E2D790D66EA1E890ADC3F45D59E2416D6DC553E8738C2ADA182E583"),
          h("3C24F511B4923F55DE51925292BEED9456359F54F01B3D0C6C30C5666030788FE6BD1345C802AE66E8C"
            "B06C93E64CFE74590D83E85E8B1E06A7A750A48E8554B1DB948BFD041432E824BCDD24AACD87F65A986"
            "15076CAD3418BD67BFC1B4FC4C9000")),
         (h("84F28000208BCC8139988A0F51441F6F8FF3C20A526CD783E30BEC1D8CC9D7E3D43AE779A5"),
          h("B2332173A07F9EBE27EDEA0DB5849B6CACC0F28A77DA52AB9A1E151399ABD07115DDB34C92C8DA0FFE6"
            "79FD8D7DF0F369000"))),
    ),
    SamsungVector(
        "AES256_S16", 32, h("06F85B77251BF79406F85B77251BF794"),
        h("A1A012430585513120853003710617A2C34D50B562F7DECFC3DBF58A6499D2966CF09C9201FDE8343E93FB18B400082A"),
        h("848233002071D1A091C5D24AF177B00E69B1A32B4E30A5168CF8C86B19730DF915EF82D8A7"),
        ((h("84F2200020DD3036DC4C636717702732ABBA185633873A933310002B25E386CF10A4E6B130"),
          h("A5E7309DCA3EFFA13D1AA03FE0D3E2BA8D04DF15A6A26989150F512ED453F5DFFB2A7E4EE4E2FFACEFC"
            "0945435BCAF3A914A9F7BD66B4F82635B7757AE82B54262489B3B58224F99E846E2A8061B17329000")),
         (h("84F2400020EC2F4F2DDA358BF87C9A946D129D7C12F132C6A63CDAD60E80526C9A6487580C"),
          h("160229863B7636672F094A2C2E62F845D3A4A38C0FB9171AF14FEE433CF4C2FA10A6E4F1EC14E8792FE"
            "0A009720C290A64C2FD9183167BFFF0AC4AF516838DE4E5A62B6AC4444AC81E5C73A6B7A57D6C55D268"
            "2B2F986C1F1FCD77DDAF69846C9000")),
         (h("84F28000207C873E7BDCE82D67EC28783A3C3222C01E70D8C7A498CA3C7E348944F44A18B3"),
          h("90AFB999D6499F47285B6319135F67F78D4CE73A3BD87F97DE623488BA9DBC7549F27DFF5B61E215A5C"
            "91F99D21682119000"))),
    ),
]  # fmt: skip


@pytest.mark.parametrize("v", SAMSUNG_VECTORS, ids=lambda v: v.name)
def test_host_reproduces_samsung_session_in_s8_and_s16(v: SamsungVector) -> None:
    host = HostSession(SAMSUNG_KEYS[v.key_length], security_level=0x33, host_challenge=v.host_challenge,
                       key_version=0x30)  # fmt: skip
    assert host.initialize_update() == h("80503000") + bytes((len(v.host_challenge),)) + v.host_challenge + h(
        "00"
    )
    assert host.external_authenticate(v.init_update_rsp) == v.ext_auth_cmd
    assert host.s16 == (len(v.host_challenge) == 16)
    for (plain, plain_rsp), (wrapped, wire_rsp) in zip(SAMSUNG_PLAIN, v.exchanges, strict=True):
        assert host.wrap(plain) == wrapped
        assert host.unwrap(wire_rsp) == plain_rsp + h("9000")


@pytest.mark.parametrize("v", SAMSUNG_VECTORS, ids=lambda v: v.name)
def test_card_reproduces_samsung_session_in_s8_and_s16(v: SamsungVector) -> None:
    # given: Samsung's challenge is declared as given (i without the pseudo-random bit, see the
    # module docstring); the response then lacks only the 3-byte sequence counter
    n = len(v.host_challenge)
    i_param = v.init_update_rsp[12] & ~0x10
    card, response = CardSession.begin(
        SAMSUNG_KEYS[v.key_length], host_challenge=v.host_challenge, key_version=0x30, i_param=i_param,
        sequence_counter=0, aid=h("A000000151000000"), card_challenge=v.init_update_rsp[13 : 13 + n],
        diversification_data=v.init_update_rsp[:10],
    )  # fmt: skip
    assert response[13:] == v.init_update_rsp[13:-3]
    # when / then
    assert card.external_authenticate(v.ext_auth_cmd) == 0x9000
    for (plain, plain_rsp), (wrapped, wire_rsp) in zip(SAMSUNG_PLAIN, v.exchanges, strict=True):
        assert card.unwrap_command(wrapped) == plain
        if len(wire_rsp) - 2 - n == -(-(len(plain_rsp) + 1) // 16) * 16:
            assert card.wrap_response(plain_rsp, 0x9000) == wire_rsp
        # else: Samsung's emulator pads the 11-byte ISD entry to 32 bytes where GPCS B.2.3 gives 16,
        # so our (minimal) R-ENC output legitimately differs; the host side accepts both.
