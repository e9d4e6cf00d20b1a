"""``manage.py vault_rewrap --to local|pkcs11``: move every data key to a new master key.

The current key is the configured one (``TESSERA_VAULT_BACKEND``); the new one is read from the
``TESSERA_VAULT_NEW_*`` variables (``TESSERA_VAULT_NEW_MASTER_KEY[_FILE]`` for ``local``,
``TESSERA_VAULT_NEW_PKCS11_*`` for ``pkcs11``) — secrets never go on the command line, where
``ps`` would show them. ``--to`` may be left out when ``TESSERA_VAULT_NEW_BACKEND`` says it.

One organisation per transaction (``keys.vault.vault_rewrap_one``): kill it at any point and run
it again; rows say which key wraps them, and every process configured with both keys opens
either. It prints organisation ids and key ids, never key material. Exit status 1 when rows
remain (failed, or created under the old key by a process that does not know the new one yet).

Test hooks (end-to-end interruption tests): ``TESSERA_VAULT_REWRAP_PAUSE_AFTER=N`` stops after
the N-th rewrap of this run, ``TESSERA_VAULT_REWRAP_PAUSE_INSIDE=N`` inside the transaction of the
(N+1)-th, after its write and before its commit; either prints a ``paused`` line and sleeps
(at most ten minutes) so that the test can SIGKILL the process there.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.errors import VaultConfigurationError
from keys.vault import (
    BACKENDS,
    RewrapOutcome,
    backend_for,
    master_key_backend,
    vault_rewrap_one,
    vault_rewrap_pending,
)

PAUSE_AFTER_ENV = "TESSERA_VAULT_REWRAP_PAUSE_AFTER"
PAUSE_INSIDE_ENV = "TESSERA_VAULT_REWRAP_PAUSE_INSIDE"
_PAUSE_LIMIT_SECONDS = 600


def _hook(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise CommandError(f"{name}={raw!r} is not an integer") from None


def _pause(where: str) -> None:
    sys.stdout.write(f"paused {where}\n")
    sys.stdout.flush()
    time.sleep(_PAUSE_LIMIT_SECONDS)
    os._exit(3)  # a forgotten hook must not leave a process behind for ever


class Command(BaseCommand):
    help = "Rewrap every organisation's data key from the current master key to a new one (resumable)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to",
            choices=sorted(BACKENDS),
            help="the new master key's backend; its settings come from TESSERA_VAULT_NEW_* "
            "(default: TESSERA_VAULT_NEW_BACKEND)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="unwrap and wrap every key, write nothing, and report"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configured = settings.TESSERA_VAULT_NEW_BACKEND
        kind = options["to"] or configured
        if not kind:
            raise CommandError("say which backend holds the new master key: --to local|pkcs11")
        if configured and options["to"] and configured != options["to"]:
            raise CommandError(
                f"--to {options['to']} contradicts TESSERA_VAULT_NEW_BACKEND={configured}; use one of them"
            )
        dry_run = bool(options["dry_run"])
        verbosity = int(options["verbosity"])
        pause_after = _hook(PAUSE_AFTER_ENV)
        pause_inside = _hook(PAUSE_INSIDE_ENV)
        try:
            current = master_key_backend()
            target = backend_for(kind, new=True)
        except VaultConfigurationError as exc:
            raise CommandError(str(exc)) from None

        pending = vault_rewrap_pending(target_key_id=target.key_id)
        total = len(pending)
        self.stdout.write(
            f"{'dry run: ' if dry_run else ''}rewrapping data keys from {current.key_id} to {target.key_id} "
            f"({kind}): {total} organisation(s) to go"
        )
        if target.key_id == current.key_id:
            self.stdout.write(self.style.WARNING("the new master key is the current one"))

        counts: Counter[str] = Counter()
        every = max(1, total // 20)
        for index, org_id in enumerate(pending, start=1):
            hook = None
            if pause_inside is not None and counts[RewrapOutcome.REWRAPPED] == pause_inside:
                hook = lambda where=f"inside the transaction of organisation {index}": _pause(where)  # noqa: E731
            try:
                outcome = vault_rewrap_one(
                    org_id=org_id, target=target, sources=[current], dry_run=dry_run, before_commit=hook
                )
            except VaultConfigurationError as exc:
                raise CommandError(
                    f"stopped at organisation {index}/{total} ({org_id}): {exc}; fix it and run again"
                ) from None
            counts[outcome] += 1
            if verbosity >= 2 or outcome in (RewrapOutcome.FAILED, RewrapOutcome.UNKNOWN_KEY):
                self.stdout.write(f"  [{index}/{total}] {org_id}: {outcome}")
            elif verbosity >= 1 and (index % every == 0 or index == total):
                self.stdout.write(f"  {index}/{total} done")
            self.stdout.flush()
            if pause_after is not None and counts[RewrapOutcome.REWRAPPED] == pause_after:
                _pause(f"after {pause_after} rewrapped")

        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing to do"
        self.stdout.write(f"summary: {summary}")
        if dry_run:
            return
        remaining = len(vault_rewrap_pending(target_key_id=target.key_id))
        if remaining:
            raise CommandError(
                f"{remaining} organisation(s) are still not under {target.key_id} (failed, wrapped by an unknown "
                "key, or created under the old key meanwhile); run the command again"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"every live data key is wrapped by {target.key_id}. Now make it the current key everywhere: "
                f"TESSERA_VAULT_BACKEND={kind} with the new key's variables (without the NEW_ part), then "
                "remove TESSERA_VAULT_NEW_*; keep the old key until every process has restarted."
            )
        )
