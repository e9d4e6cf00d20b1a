"""The demo's story page (/demo/stories/): demo mode only, signed-in visitors, one story at a
time, its narrative polled until the verdict; anything else 404 (never a 500)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from scenarios import demo_runs


@pytest.fixture
def visitor(world: Any, settings: Any, tmp_path: Any) -> Client:
    settings.DEBUG = True
    settings.VAR_DIR = tmp_path
    client = Client()
    client.force_login(world.subscriber_user)
    return client


def test_outside_demo_mode_the_pages_do_not_exist(world: Any, settings: Any) -> None:
    settings.DEBUG = False
    client = Client()
    client.force_login(world.subscriber_user)
    assert client.get("/demo/stories/").status_code == 404
    assert client.post("/demo/stories/utilities/run/").status_code == 404
    dashboard = client.get(f"/o/{world.subscriber.slug}/")
    assert "/demo/stories/" not in dashboard.content.decode()


def test_an_anonymous_visitor_is_sent_to_the_login_page(db: Any, settings: Any) -> None:
    settings.DEBUG = True
    r = Client().get("/demo/stories/")
    assert r.status_code == 302 and "/login/" in r["Location"]


def test_the_page_offers_a_button_per_story_and_the_dashboard_links_it(world: Any, visitor: Client) -> None:
    page = visitor.get("/demo/stories/").content.decode()
    for story in ("utilities", "automotive", "healthcare"):
        assert f"Run the {story} story" in page and f"/demo/stories/{story}/run/" in page
    assert "/demo/stories/" in visitor.get(f"/o/{world.subscriber.slug}/").content.decode()


def test_unknown_stories_and_runs_answer_404(visitor: Client) -> None:
    assert visitor.post("/demo/stories/gardening/run/").status_code == 404
    assert visitor.get("/demo/stories/runs/not-a-run/").status_code == 404
    assert visitor.get("/demo/stories/runs/" + "0" * 32 + "/").status_code == 404
    assert visitor.get("/demo/stories/?run=../../etc/passwd").status_code == 404


def test_a_run_streams_its_narrative_to_the_verdict_and_one_runs_at_a_time(visitor: Client) -> None:
    """A real ``manage.py scenario`` subprocess; here no portal answers at the test server's
    address, so it ends at once with that reason as its verdict."""
    r = visitor.post("/demo/stories/automotive/run/")
    assert r.status_code == 302 and "?run=" in r["Location"]
    run_id = r["Location"].split("?run=")[1]
    second = visitor.post("/demo/stories/healthcare/run/")
    busy = second.status_code == 409
    deadline = time.monotonic() + 60
    while True:
        fragment = visitor.get(f"/demo/stories/runs/{run_id}/").content.decode()
        if "hx-trigger" not in fragment:
            break
        assert "every 1s" in fragment
        assert time.monotonic() < deadline, fragment
        time.sleep(0.3)
    assert "the story did not finish" in fragment and "no portal answers" in fragment
    assert 'class="verdict error"' in fragment
    assert busy or second.status_code == 302  # refused while running (unless it had already ended)
    view = demo_runs.run_read(run_id)
    assert view.done and view.status not in (None, 0) and view.story == "automotive"
    page = visitor.get(f"/demo/stories/?run={run_id}").content.decode()
    assert "Automotive story" in page
