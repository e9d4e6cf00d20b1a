"""Fixtures shared by the foundation test packages (import them in a package's ``conftest.py``)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def fast_password_hasher(settings: Any) -> None:
    """The world fixture creates six users; PBKDF2 at production strength would cost ~0.5 s each.
    Login and token tests still go through the real ``check_password`` path, only cheaper."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
