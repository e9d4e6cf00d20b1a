"""Job compiler: job requests → GlobalPlatform APDU scripts protected with SCP03 (DESIGN §7).

Django-free (imports :mod:`gp`, the standard library and ``cryptography`` only), so workers,
tools and tests use it without settings.  References are to GP Card Spec v2.3.1 ("GPCS") and its
Amendment D v1.2 (SCP03, "Amd D").

- :mod:`jobs.compiler.session` — session plans, precomputed / interactive scripts, unwrapping.
- :mod:`jobs.compiler.payloads` — the plain commands of each job kind.
- :mod:`jobs.compiler.inventory` — card content from GET STATUS / GET DATA answers.
- :mod:`jobs.compiler.demo_app` — the synthetic "Tessera demo meter app" load file.
"""

from __future__ import annotations

from jobs.compiler.inventory import CardInventory, app_state, key_versions, parse_inventory, sd_present
from jobs.compiler.session import (
    INITIAL_SEQUENCE_COUNTER,
    CardAuthError,
    CommandResult,
    CompilerError,
    CounterMismatch,
    PayloadCommand,
    Script,
    ScriptCommand,
    ScriptError,
    ScriptOutcome,
    SessionPlan,
    interactive_continue,
    interactive_open,
    new_plan,
    precomputed_script,
    sw_matches,
    unwrap_responses,
)

__all__ = [
    "INITIAL_SEQUENCE_COUNTER",
    "CardAuthError",
    "CardInventory",
    "CommandResult",
    "CompilerError",
    "CounterMismatch",
    "PayloadCommand",
    "Script",
    "ScriptCommand",
    "ScriptError",
    "ScriptOutcome",
    "SessionPlan",
    "app_state",
    "interactive_continue",
    "interactive_open",
    "key_versions",
    "new_plan",
    "parse_inventory",
    "precomputed_script",
    "sd_present",
    "sw_matches",
    "unwrap_responses",
]
