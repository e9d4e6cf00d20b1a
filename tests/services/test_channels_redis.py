"""Live events over Channels and Redis: group round trips, and the organisation event stream as a
browser sees it (session cookie, origin check, the real ASGI application)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import transaction
from django.test import Client

pytestmark = pytest.mark.services


class Rollback(Exception):
    pass


def session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def events_socket(org: str, cookie: str | None) -> WebsocketCommunicator:
    from portal.asgi import application

    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, f"/ws/o/{org}/events/", headers=headers)


def test_a_group_message_travels_through_redis_to_every_member_and_no_one_else(
    redis_channel_layers: str,
) -> None:
    from channels_redis.core import RedisChannelLayer

    async def scenario() -> None:
        layer = get_channel_layer()
        assert isinstance(layer, RedisChannelLayer)
        group = f"org.test-{uuid.uuid4().hex}"
        a = await layer.new_channel()
        b = await layer.new_channel()
        outsider = await layer.new_channel()
        try:
            # given two channels in a group; when one message is sent to the group
            await layer.group_add(group, a)
            await layer.group_add(group, b)
            await layer.group_send(group, {"type": "org.event", "event": {"seq": 7}})
            # then each member receives it once, and a channel outside the group nothing
            for channel in (a, b):
                message = await asyncio.wait_for(layer.receive(channel), timeout=5)
                assert message == {"type": "org.event", "event": {"seq": 7}}
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(layer.receive(outsider), timeout=0.5)
            # and after leaving the group, nothing more arrives
            await layer.group_discard(group, b)
            await layer.group_send(group, {"type": "org.event", "event": {"seq": 8}})
            assert (await asyncio.wait_for(layer.receive(a), timeout=5))["event"] == {"seq": 8}
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(layer.receive(b), timeout=0.5)
        finally:
            await layer.group_discard(group, a)
            await layer.close_pools()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_a_member_receives_its_organisations_audit_event_once_the_service_commits(
    world: Any, redis_channel_layers: str
) -> None:
    from tenants import services
    from tenants.access import resolve_actor

    owner_cookie = session_cookie(world.owner_user)
    stranger_cookie = session_cookie(world.stranger_user)

    def invite(rollback: bool = False) -> None:
        actor = resolve_actor(world.owner_user, "owner-sei")
        with transaction.atomic():
            services.invitation_create(actor=actor, email="live@example.test", role="operator")
            if rollback:
                raise Rollback

    def invite_then_roll_back() -> None:
        with pytest.raises(Rollback):
            invite(rollback=True)

    async def scenario() -> None:
        member = events_socket("owner-sei", owner_cookie)
        other = events_socket("stranger-sp", stranger_cookie)
        try:
            # given a member of the owner and a member of another organisation, both listening
            assert (await member.connect(timeout=5))[0]
            assert (await other.connect(timeout=5))[0]
            # when a write that rolls back, then one that commits, happen for the owner
            await database_sync_to_async(invite_then_roll_back)()
            await database_sync_to_async(invite)()
            # then the owner's member sees exactly the committed event
            event = await member.receive_json_from(timeout=5)
            assert (event["kind"], event["tag"], event["actor"]) == ("audit", "member:invite", "owner-user")
            assert await member.receive_nothing(timeout=0.5)
            # and the other organisation's member sees nothing
            assert await other.receive_nothing(timeout=0.5)
        finally:
            await member.disconnect()
            await other.disconnect()
            await get_channel_layer().close_pools()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("who", ["stranger", "anonymous"])
def test_a_stranger_or_anonymous_connection_to_an_organisations_stream_is_closed_with_4404(
    world: Any, redis_channel_layers: str, who: str
) -> None:
    cookie = session_cookie(world.stranger_user) if who == "stranger" else None

    async def scenario() -> None:
        socket = events_socket("owner-sei", cookie)
        try:
            connected, code = await socket.connect(timeout=5)
            assert (connected, code) == (False, 4404)
        finally:
            await socket.disconnect()
            await get_channel_layer().close_pools()

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_the_collaborator_listens_to_its_own_stream_not_the_owners(
    world: Any, redis_channel_layers: str
) -> None:
    cookie = session_cookie(world.collaborator_user)

    async def scenario() -> None:
        own = events_socket("collab-tsm", cookie)
        owners = events_socket("owner-sei", cookie)
        try:
            assert (await own.connect(timeout=5))[0]
            assert (await owners.connect(timeout=5)) == (False, 4404)
        finally:
            await own.disconnect()
            await get_channel_layer().close_pools()

    async_to_sync(scenario)()


def test_a_socket_from_a_foreign_origin_is_refused(redis_channel_layers: str) -> None:
    from portal.asgi import application

    async def scenario() -> None:
        socket = WebsocketCommunicator(
            application, "/ws/o/owner-sei/events/", headers=[(b"origin", b"http://evil.example")]
        )
        connected, _ = await socket.connect(timeout=5)
        assert not connected
        await get_channel_layer().close_pools()

    async_to_sync(scenario)()


def test_sync_code_outside_a_server_sends_through_one_long_lived_loop_in_order(redis_channel_layers: str) -> None:
    # given a receiver on its own event loop (like a consumer in the ASGI server)
    import threading

    from portal import layer as sender

    group = f"org.test-{uuid.uuid4().hex}"
    got: list[Any] = []
    joined = threading.Event()

    async def receive_all() -> None:
        # its own layer object: closing its pools must not touch the sender's loop's connections
        from channels_redis.core import RedisChannelLayer

        layer = RedisChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        joined.set()
        try:
            for _ in range(6):
                got.append((await asyncio.wait_for(layer.receive(channel), timeout=5))["event"]["n"])
        finally:
            await layer.group_discard(group, channel)
            await layer.close_pools()

    receiver = threading.Thread(target=lambda: asyncio.run(receive_all()))
    receiver.start()
    assert joined.wait(5)
    # when plain synchronous code (a Celery task, no server loop) sends three batches of two
    for n in range(3):
        sender.group_send_many([(group, {"type": "org.event", "event": {"n": 2 * n}}),
                                (group, {"type": "org.event", "event": {"n": 2 * n + 1}})])  # fmt: skip
    receiver.join(10)
    # then every message arrives, in order, and all went through the same sender loop
    assert got == [0, 1, 2, 3, 4, 5]
    assert sender._loop is not None and sender._loop.is_running() and sender._loop_pid == __import__("os").getpid()
