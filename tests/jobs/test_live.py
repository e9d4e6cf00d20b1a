"""Job events on the organisation streams (the in-memory channel layer, the real ASGI application):
each party to a job follows it live; a member of another organisation, listening to its own stream,
receives nothing of it."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from jobs.models import JobState
from jobs.services import job_request


def events_socket(user: Any, org: str) -> WebsocketCommunicator:
    from portal.asgi import application

    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    headers = [
        (b"origin", b"http://testserver"),
        (b"host", b"testserver"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
    return WebsocketCommunicator(application, f"/ws/o/{org}/events/", headers=headers)


async def job_events(socket: WebsocketCommunicator, until: str) -> list[dict[str, Any]]:
    """The job events received until one in state ``until`` (other kinds of event are skipped)."""
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["state"] != until:
        event = await socket.receive_json_from(timeout=5)
        if event.get("kind") == "job":
            seen.append(event)
    return seen


def test_each_party_follows_a_job_live_and_another_organisation_hears_nothing(jobworld, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    users = jobworld.users
    sockets = {
        "sei": events_socket(users["sei"], "sei"),  # issuer of the SE, on whose behalf the TSM acts
        "tsm": events_socket(users["tsm"], "tsm"),  # the requester
        "supplier": events_socket(users["supplier"], "supplier"),  # the beneficiary
        "stranger": events_socket(users["stranger"], "stranger"),  # listening to its own stream
    }

    def request_and_run() -> Any:
        job = job_request(
            actor=jobworld.tsm_for_sei,
            device=jobworld.device,
            kind="create_security_domain",
            params={"aid": "A0000001515350AA01", "owner": "supplier"},
        )
        jobworld.gateway.run(Client())
        job.refresh_from_db()
        return job

    async def scenario() -> None:
        try:
            for socket in sockets.values():
                assert (await socket.connect(timeout=5))[0]
            # when the TSM requests a job for the supplier and the gateway runs it
            job = await database_sync_to_async(request_and_run)()
            assert job.state == JobState.SUCCEEDED, job.error_message
            # then every party sees it from queued to succeeded, about this job and device
            for org in ("sei", "tsm", "supplier"):
                events = await job_events(sockets[org], until=JobState.SUCCEEDED)
                assert events[0]["state"] == JobState.QUEUED, org
                assert {(e["job"], e["device"], e["job_kind"]) for e in events} == {
                    (str(job.pk), str(jobworld.device.pk), "create_security_domain")
                }, org
            # and the other organisation's member received nothing at all
            assert await sockets["stranger"].receive_nothing(timeout=0.5)
        finally:
            for socket in sockets.values():
                await socket.disconnect()

    async_to_sync(scenario)()
