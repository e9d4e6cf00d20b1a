"""Fixtures of this test package."""

from tests.support.fixtures import fast_password_hasher  # noqa: F401
