"""Celery end to end: a real worker process, a real Redis broker, results coming back."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from portal.tasks import audit_verify, enqueue_on_commit, ping

pytestmark = pytest.mark.services


class Rollback(Exception):
    pass


def test_a_worker_runs_a_task_from_the_broker_and_returns_its_result(celery_worker: Any) -> None:
    # given a worker listening on its own queue; when a ping goes through Redis
    result = celery_worker.app().send_task("portal.ping", queue=celery_worker.queue)
    celery_worker.task_ids.append(result.id)
    # then the worker answers, naming itself
    reply = result.get(timeout=30)
    assert reply["reply"] == "pong"
    assert reply["worker"].startswith(celery_worker.queue + "@")
    assert result.state == "SUCCESS"


def test_a_task_enqueued_in_a_transaction_that_rolls_back_never_runs(
    db: Any, celery_worker: Any, redis_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    app = celery_worker.app()
    signature = app.signature("portal.ping", queue=celery_worker.queue)
    doomed_id, kept_id = f"doomed-{celery_worker.queue}", f"kept-{celery_worker.queue}"
    celery_worker.task_ids += [doomed_id, kept_id]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        # given a task scheduled inside a transaction that rolls back
        with pytest.raises(Rollback), transaction.atomic():
            enqueue_on_commit(signature, task_id=doomed_id)
            raise Rollback
        # and one scheduled inside a transaction that commits, after it
        with transaction.atomic():
            enqueue_on_commit(signature, task_id=kept_id)
    assert len(callbacks) == 1
    # when the committed one has run (a solo worker takes its queue in order)
    assert app.AsyncResult(kept_id).get(timeout=30)["reply"] == "pong"
    # then the rolled-back one was never sent, and nothing is left waiting
    assert app.AsyncResult(doomed_id).state == "PENDING"
    assert redis_client.llen(celery_worker.queue) == 0


def test_nothing_is_sent_before_the_transaction_commits(
    db: Any, celery_worker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    app = celery_worker.app()
    signature = app.signature("portal.ping", queue=celery_worker.queue)
    task_id = f"spy-{celery_worker.queue}"
    celery_worker.task_ids.append(task_id)
    sent: list[Any] = []

    class Spy:
        def apply_async(self, **kw: Any) -> Any:
            sent.append(kw)
            return signature.apply_async(**kw)

    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            enqueue_on_commit(Spy(), task_id=task_id)
            assert sent == []
        assert sent == []  # still inside the test's outer transaction
    assert len(sent) == 1
    assert app.AsyncResult(task_id).get(timeout=30)["reply"] == "pong"


@pytest.mark.django_db(transaction=True)
def test_a_worker_verifies_the_audit_chain_in_the_shared_database(celery_worker: Any, world: Any) -> None:
    if not celery_worker.shares_database:
        pytest.skip(
            "the worker shares the test database only on PostgreSQL (SQLite test DBs are per process)"
        )
    from audit.models import AuditTag
    from audit.services import audit_record

    for _ in range(5):
        audit_record(actor=None, tag=AuditTag.ORG_SUSPEND, concerns=[world.owner])
    result = celery_worker.app().send_task("portal.audit_verify", queue=celery_worker.queue)
    celery_worker.task_ids.append(result.id)
    assert result.get(timeout=30) == {"ok": True, "events": 5}


# --- the same tasks in the embedded default (eager, in process) ---------------------------------


def test_in_the_embedded_default_tasks_run_in_process(settings: Any) -> None:
    from portal.celery import app

    if not app.conf.task_always_eager:
        pytest.skip("REDIS_URL is set: Celery is not eager in this run")
    assert ping.delay().get(timeout=5)["reply"] == "pong"


def test_the_audit_verify_task_reports_a_break(db: Any) -> None:
    from audit.models import AuditEvent, AuditTag
    from audit.services import audit_record

    events = [audit_record(actor=None, tag=AuditTag.ORG_SUSPEND) for _ in range(3)]
    assert audit_verify() == {"ok": True, "events": 3}
    AuditEvent.objects.filter(seq=events[1].seq).update(details={"x": 1})
    report = audit_verify()
    assert (report["ok"], report["seq"]) == (False, events[1].seq)


def test_the_helper_sends_at_once_outside_a_transaction(
    db: Any, django_capture_on_commit_callbacks: Any
) -> None:
    sent: list[dict[str, Any]] = []

    class Spy:
        def apply_async(self, **kw: Any) -> None:
            sent.append(kw)

    with django_capture_on_commit_callbacks(execute=True):
        enqueue_on_commit(Spy(), args=[1, 2], kwargs={"a": 3}, queue="q")
    assert sent == [{"args": (1, 2), "kwargs": {"a": 3}, "queue": "q"}]
