"""``manage.py audit_verify``: recompute the audit hash chain; exit non-zero at the first break."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.services import ChainBreak, audit_verify_chain


class Command(BaseCommand):
    help = "Recompute the audit event hash chain and report the first break, if any."

    def handle(self, *args: object, **options: object) -> None:
        try:
            count = audit_verify_chain()
        except ChainBreak as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"audit chain intact: {count} events verified"))
