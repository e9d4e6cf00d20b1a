"""The three field stories of issue 6 (utilities, automotive, healthcare) run end to end.

``python manage.py scenario utilities|automotive|healthcare`` (docs/scenarios.md). Each story
enrols fresh devices (new serials, soft secure elements) in the demo organisations of
``seed_demo``, starts one real agent process per device talking HTTP to a running portal, acts as
each stakeholder through the portal's REST API, prints a narrative line per step with its
outcome, and finally checks the state of every secure element (its own registry, read from the
soft SE's state file once its agent has stopped) and of the database against what each
stakeholder expects.

Why the REST API and not the services in-process: the portal that the agents talk to compiles the
jobs; in the embedded default (SQLite, eager Celery, local-memory cache) only a job requested in
the server's own process marks its device as having work. Enrolment (registering devices and SEs
and importing the ISD keys, which the demo does for the manufacturer and the issuer like
``run_demo``) touches no job and is done in-process, through the services.
"""
