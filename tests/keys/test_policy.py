"""keys.policy: security strengths (SP 800-57 Pt 1 Rev. 5 Table 2), horizons (Table 4, SP 800-131A
Rev. 2 Table 1, NIST IR 8547 ipd as a policy choice) and the assessment of a key set against its
crypto-period and the device's end of service. Pure functions: no database."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import policy
from keys.policy import POLICIES, Assessment, PolicyError, Status, assess, security_strength

D = dt.date


@pytest.mark.parametrize(
    ("algorithm", "length", "family", "bits"),
    [
        ("AES", 16, "symmetric", 128),
        ("AES", 24, "symmetric", 192),
        ("AES", 32, "symmetric", 256),
        ("aes", 32, "symmetric", 256),
        ("TDEA", 16, "symmetric", 80),
        ("3DES", 24, "symmetric", 112),
        ("P-256", 0, "asymmetric", 128),
        ("secp384r1", 0, "asymmetric", 192),
        ("P-521", 0, "asymmetric", 256),
        ("brainpoolP256r1", 0, "asymmetric", 128),
        ("ECC", 28, "asymmetric", 112),
        ("ECC", 32, "asymmetric", 128),
        ("RSA", 256, "asymmetric", 112),
        ("RSA", 384, "asymmetric", 128),
        ("RSA", 128, "asymmetric", 80),
    ],
)
def test_security_strength_follows_sp800_57_table_2(algorithm, length, family, bits):
    assert security_strength(algorithm, length) == (family, bits)


@pytest.mark.parametrize(
    ("algorithm", "length"),
    [("AES", 20), ("AES", 0), ("AES", -1), ("AES", True), ("AES", "16"), ("ROT13", 16), ("", 16), (None, 16)],
)
def test_unknown_algorithms_and_lengths_are_refused_with_a_policy_error(algorithm, length):
    with pytest.raises(PolicyError):
        security_strength(algorithm, length)


@pytest.mark.parametrize(
    ("algorithm", "length", "until"),
    [
        ("AES", 16, None),  # Table 4: 128 bits "through 2031 and beyond"
        ("AES", 32, None),
        ("TDEA", 24, D(2023, 12, 31)),  # SP 800-131A Rev. 2 Table 1
        ("TDEA", 16, D(2015, 12, 31)),
        ("ECC", 28, D(2030, 12, 31)),  # 112 bits: Table 4 and IR 8547 ipd agree on 2030
        ("P-256", 0, D(2035, 12, 31)),  # IR 8547 ipd quantum horizon (policy choice)
        ("P-384", 0, D(2035, 12, 31)),
        ("RSA", 128, D(2013, 12, 31)),  # < 112 bits disallowed
    ],
)
def test_the_default_horizons(algorithm, length, until):
    assert policy.strength_horizon(algorithm, length).acceptable_through == until


TODAY = D(2026, 3, 1)

# (name, algorithm, length, created, crypto_period_end, device_eos, today, expected status, target)
CASES = [
    (
        "fresh AES-128, device retired within its period",
        "AES",
        16,
        D(2026, 1, 1),
        D(2028, 1, 1),
        D(2027, 6, 1),
        TODAY,
        Status.OK,
        None,
    ),
    (
        "AES-256 without a device date lasts its crypto-period",
        "AES",
        32,
        D(2026, 1, 1),
        None,
        None,
        TODAY,
        Status.OK,
        None,
    ),
    (
        "AES-128 on a 20-year meter: rotate at the period's end",
        "AES",
        16,
        D(2026, 1, 1),
        D(2028, 1, 1),
        D(2046, 1, 1),
        TODAY,
        Status.CRYPTO_PERIOD_ENDS_FIRST,
        None,
    ),
    (
        "the crypto-period defaults from created_at",
        "AES",
        16,
        D(2026, 1, 1),
        None,
        D(2046, 1, 1),
        TODAY,
        Status.CRYPTO_PERIOD_ENDS_FIRST,
        None,
    ),
    (
        "3TDEA past 2023 has expired, upgrade to AES-256",
        "TDEA",
        24,
        D(2020, 1, 1),
        D(2030, 1, 1),
        D(2040, 1, 1),
        TODAY,
        Status.EXPIRED,
        "AES-256",
    ),
    (
        "3TDEA in 2022 on a 2040 device is too weak for the device",
        "TDEA",
        24,
        D(2020, 1, 1),
        D(2030, 1, 1),
        D(2040, 1, 1),
        D(2022, 1, 1),
        Status.STRENGTH_EXPIRES_BEFORE_DEVICE,
        "AES-256",
    ),
    (
        "an old crypto-period has expired",
        "AES",
        32,
        D(2020, 1, 1),
        D(2022, 1, 1),
        D(2040, 1, 1),
        TODAY,
        Status.EXPIRED,
        None,
    ),
    (
        "P-256 on a 2045 device outlives the quantum horizon, no classical upgrade helps",
        "P-256",
        0,
        D(2026, 1, 1),
        D(2050, 1, 1),
        D(2045, 1, 1),
        TODAY,
        Status.STRENGTH_EXPIRES_BEFORE_DEVICE,
        None,
    ),
    (
        "P-256 on a 2033 device is fine",
        "P-256",
        0,
        D(2026, 1, 1),
        D(2034, 1, 1),
        D(2033, 1, 1),
        TODAY,
        Status.OK,
        None,
    ),
    (
        "ECC-224 upgrades to P-384",
        "ECC",
        28,
        D(2026, 1, 1),
        D(2034, 1, 1),
        D(2033, 1, 1),
        TODAY,
        Status.STRENGTH_EXPIRES_BEFORE_DEVICE,
        "P-384",
    ),
    (
        "the last acceptable day is still acceptable",
        "TDEA",
        24,
        D(2020, 1, 1),
        D(2024, 6, 1),
        D(2023, 12, 31),
        D(2023, 12, 31),
        Status.OK,
        None,
    ),
    (
        "the day after is not",
        "TDEA",
        24,
        D(2020, 1, 1),
        D(2024, 6, 1),
        D(2023, 12, 31),
        D(2024, 1, 1),
        Status.EXPIRED,
        "AES-256",
    ),
]


@pytest.mark.parametrize(
    ("algorithm", "length", "created", "period_end", "eos", "today", "status", "target"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_assess(algorithm, length, created, period_end, eos, today, status, target):
    a = assess(algorithm, length, created, period_end, eos, today)
    assert a.status is status, a.message
    assert a.target == target
    assert a.message and a.algorithm in a.message
    assert a.flagged == (status is not Status.OK)


def test_assess_accepts_datetimes_and_names_the_dates_in_its_message():
    created = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    a = assess("AES", 16, created, None, D(2040, 1, 1), created)
    assert a.status is Status.CRYPTO_PERIOD_ENDS_FIRST
    assert a.crypto_period_end == D(2026, 1, 1) + dt.timedelta(days=policy.DEFAULT_CRYPTO_PERIOD_DAYS)
    assert a.rotate_by == a.crypto_period_end
    assert a.crypto_period_end.isoformat() in a.message and "2040-01-01" in a.message
    assert a.as_dict()["status"] == "crypto_period_ends_first"


def test_an_operator_policy_may_end_aes_128_and_then_recommends_aes_256():
    strict = POLICIES["aes256-only"]
    a = assess("AES", 16, D(2026, 1, 1), D(2050, 1, 1), D(2045, 1, 1), TODAY, policy=strict)
    assert a.status is Status.STRENGTH_EXPIRES_BEFORE_DEVICE
    assert (a.target, a.target_key_length) == ("AES-256", 32)
    assert "operator policy" in a.message
    # the default NIST policy keeps AES-128 (IR 8547 ipd §4.2)
    assert assess("AES", 16, D(2026, 1, 1), D(2050, 1, 1), D(2045, 1, 1), TODAY).status is Status.OK


def test_to_rotate_counts_due_crypto_periods_within_the_notice():
    a = assess("AES", 16, D(2024, 4, 1), D(2026, 4, 1), D(2046, 1, 1), TODAY)
    assert a.status is Status.CRYPTO_PERIOD_ENDS_FIRST
    assert a.to_rotate(TODAY) is True
    assert a.to_rotate(TODAY, notice_days=10) is False


def test_bad_dates_are_a_policy_error():
    with pytest.raises(PolicyError):
        assess("AES", 16, "2026-01-01", None, None, TODAY)
    with pytest.raises(PolicyError):
        assess("AES", 16, None, None, None, None)


# --- properties --------------------------------------------------------------------------------

dates = st.dates(min_value=D(2000, 1, 1), max_value=D(2100, 12, 31))
maybe_dates = (
    st.none() | dates | st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1))
)
junk = st.none() | st.integers() | st.text(max_size=40) | st.booleans() | st.floats() | st.binary(max_size=8)


@given(
    algorithm=st.sampled_from(["AES", "TDEA", "P-256", "ECC", "RSA", "brainpoolP512r1"])
    | st.text(max_size=40)
    | junk,
    length=st.integers(min_value=-5, max_value=5000) | junk,
    created=maybe_dates | junk,
    period_end=maybe_dates | junk,
    eos=maybe_dates | junk,
    today=dates | junk,
    name=st.sampled_from(sorted(POLICIES)),
)
def test_assess_never_crashes_it_answers_or_raises_a_policy_error(
    algorithm, length, created, period_end, eos, today, name
):
    try:
        a = assess(algorithm, length, created, period_end, eos, today, policy=POLICIES[name])
    except PolicyError:
        return
    assert isinstance(a, Assessment) and isinstance(a.status, Status) and a.message


SEVERITY = {
    Status.OK: 0,
    Status.CRYPTO_PERIOD_ENDS_FIRST: 1,
    Status.STRENGTH_EXPIRES_BEFORE_DEVICE: 2,
    Status.EXPIRED: 3,
}
SYMMETRIC_KEYS = [("TDEA", 16), ("TDEA", 24), ("AES", 16), ("AES", 24), ("AES", 32)]
ASYMMETRIC_KEYS = [("ECC", 20), ("ECC", 28), ("P-256", 0), ("P-384", 0), ("P-521", 0)]


@given(
    keys=st.sampled_from([SYMMETRIC_KEYS, ASYMMETRIC_KEYS]),
    i=st.integers(0, 4),
    j=st.integers(0, 4),
    created=dates,
    period_end=st.none() | dates,
    eos=st.none() | dates,
    today=dates,
    name=st.sampled_from(sorted(POLICIES)),
)
def test_a_stronger_key_is_never_judged_worse_than_a_weaker_one(
    keys, i, j, created, period_end, eos, today, name
):
    (weak, strong) = sorted((keys[i], keys[j]), key=lambda k: security_strength(*k)[1])
    p = POLICIES[name]
    a_weak = assess(*weak, created, period_end, eos, today, policy=p)
    a_strong = assess(*strong, created, period_end, eos, today, policy=p)
    assert a_strong.strength >= a_weak.strength
    assert SEVERITY[a_strong.status] <= SEVERITY[a_weak.status], (
        weak,
        strong,
        a_weak.message,
        a_strong.message,
    )


@given(created=dates, eos=st.none() | dates, today=dates)
def test_a_recommended_target_always_outlasts_the_key_it_replaces(created, eos, today):
    for algorithm, length in SYMMETRIC_KEYS + ASYMMETRIC_KEYS:
        a = assess(algorithm, length, created, None, eos, today, policy=POLICIES["aes256-only"])
        if a.target is not None:
            target_alg = "AES" if a.target.startswith("AES") else a.target
            horizon = policy.strength_horizon(target_alg, a.target_key_length, POLICIES["aes256-only"])
            assert a.strength_until is not None
            assert horizon.acceptable_through is None or horizon.acceptable_through > a.strength_until
