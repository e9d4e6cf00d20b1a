"""``manage.py scenario utilities|automotive|healthcare``: one field story end to end (docs/scenarios.md).

Runs against a running portal (``--server``, default the ``make run`` one) with agents it starts
and stops itself; prints the narrative and the final checks; exit status 0 when every check
passed, 1 when an expectation failed, 2 when a step could not be done.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from scenarios.stories import STORIES


class Command(BaseCommand):
    help = "Run one of the three field stories against real agents and check every SE's final state."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("story", choices=sorted(STORIES))
        parser.add_argument("--server", default="http://127.0.0.1:8000", help="the running portal")

    def handle(self, *args: Any, **options: Any) -> None:
        import logging

        import httpx

        from scenarios.run import run_story

        logging.getLogger("httpx").setLevel(logging.WARNING)  # the narrative, not every request

        server = options["server"].rstrip("/")
        try:
            httpx.get(f"{server}/healthz", timeout=5)
        except httpx.HTTPError as exc:
            raise CommandError(
                f"no portal answers at {server} ({type(exc).__name__}): start it (make run)"
            ) from None

        def emit(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        verdict = run_story(options["story"], server=server, emit=emit)
        if verdict.status:
            sys.exit(verdict.status)
