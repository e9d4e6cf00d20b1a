"""The signature scheme and the event-type vocabulary, as pure functions (hypothesis for parsers)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifications import events
from notifications.signing import SignatureError, sign, verify

NOW = 1_800_000_000


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body_as_documented() -> None:
    expected = hmac.new(b"whsec_k", b"1800000000.{}", hashlib.sha256).hexdigest()
    assert sign("whsec_k", 1800000000, b"{}") == f"v1={expected}"


def test_any_of_several_v1_values_may_match_while_secrets_change() -> None:
    header = f"v1={'0' * 64}, {sign('s', NOW, b'x')}"
    verify("s", str(NOW), b"x", header, now=NOW)


@given(secret=st.text(min_size=1, max_size=40), body=st.binary(max_size=300), age=st.integers(0, 300))
def test_what_is_signed_verifies_within_the_tolerance(secret: str, body: bytes, age: int) -> None:
    verify(secret, str(NOW), body, sign(secret, NOW, body), now=NOW + age)


@given(timestamp=st.text(max_size=20), header=st.text(max_size=200), body=st.binary(max_size=100))
def test_any_malformed_timestamp_or_header_is_a_signature_error_never_a_crash(
    timestamp: str, header: str, body: bytes
) -> None:
    try:
        verify("secret", timestamp, body, header, now=NOW)
    except SignatureError:
        return
    pytest.fail("an arbitrary header verified")


@pytest.mark.parametrize("timestamp", ["²", "1800000000.5", "-1", " 1800000000", "9" * 13])
def test_odd_timestamps_are_refused(timestamp: str) -> None:
    with pytest.raises(SignatureError):
        verify("s", timestamp, b"x", sign("s", timestamp, b"x"), now=NOW)


@given(header=st.text(max_size=80))
def test_any_header_with_a_fresh_timestamp_is_a_signature_error_never_a_crash(header: str) -> None:
    with pytest.raises(SignatureError):
        verify("secret", str(NOW), b"x", "v1=" + header, now=NOW)


@given(flip=st.integers(0, 63))
def test_a_single_changed_digit_does_not_verify(flip: int) -> None:
    good = sign("s", NOW, b"body")
    digits = list(good[3:])
    digits[flip] = "0" if digits[flip] != "0" else "1"
    with pytest.raises(SignatureError):
        verify("s", str(NOW), b"body", "v1=" + "".join(digits), now=NOW)


@pytest.mark.parametrize(
    "event, expected",
    [
        ({"kind": "job", "state": "succeeded"}, "job.succeeded"),
        ({"kind": "job", "state": "awaiting_consent"}, "job.awaiting_consent"),
        ({"kind": "consent", "event": "revoked", "state": "x"}, "consent.revoked"),
        ({"kind": "switch"}, "switch.updated"),
        ({"kind": "campaign", "state": "Weird State!"}, "campaign.updated"),
        ({"kind": "audit", "tag": "job:request"}, None),
        ({"state": "succeeded"}, None),
    ],
)
def test_live_events_map_to_webhook_types(event: dict[str, str], expected: str | None) -> None:
    assert events.event_type(event) == expected


@given(st.one_of(st.text(max_size=60), st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=2)))
def test_pattern_validation_answers_a_boolean_for_anything(value: object) -> None:
    assert events.valid_pattern(value) in (True, False)


def test_patterns_match_all_a_family_or_one_type() -> None:
    assert events.matches(["*"], "consent.granted")
    assert events.matches(["job.*"], "job.failed") and not events.matches(["job.*"], "jobs.failed")
    assert events.matches(["job.failed"], "job.failed") and not events.matches(
        ["job.failed"], "job.succeeded"
    )
    assert not any(events.valid_pattern(p) for p in ["keys.*", "job.", "job.*.*", "JOB.*", "", "*.*"])
