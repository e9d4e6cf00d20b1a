"""The demo's story page (``/demo/stories/``, only when ``DEBUG``: ``make run``): a button per field
story; the story runs as a subprocess of the server (scenarios.demo_runs) and the page polls its
narrative (htmx, every second) until the verdict."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View

from portal.errors import DomainError
from portal.views import error_page
from scenarios import demo_runs
from scenarios.stories import STORIES

BLURBS = {
    "utilities": "GridCo's meter: SunPower installs billing, Ana switches to GreenWatt (keys loaded "
    "confidentially), SunPower's domain is deleted, Ana's own consumption app goes beside the others.",
    "automotive": "Ben's car: the garage, the tracker and the insurer each get a domain with his consent; "
    "he withdraws the insurer's and its domain is removed; the car maker sees none of their keys or data.",
    "healthcare": "Cara's leased kit: North Clinic's domain is made by the TSM and loaded with its own keys; "
    "CareKit re-leases the kit to South Clinic; Cara is informed, her consent is not needed.",
}


class DemoView(View):
    """Demo pages: 404 outside demo mode, the login page for anonymous visitors."""

    def dispatch(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not settings.DEBUG:
            raise Http404("No such page.")
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        try:
            return super().dispatch(request, *args, **kwargs)
        except DomainError as exc:
            return error_page(request, exc.status, exc.message)


class StoriesView(DemoView):
    def get(self, request: HttpRequest) -> HttpResponse:
        run = None
        run_id = request.GET.get("run", "")
        if run_id:
            run = demo_runs.run_read(run_id)
        stories = [(name, BLURBS.get(name, "")) for name in STORIES]
        return render(request, "demo/stories.html", {"stories": stories, "run": run})


class StoryStartView(DemoView):
    def post(self, request: HttpRequest, story: str) -> HttpResponse:
        server = f"{request.scheme}://{request.get_host()}"
        run_id = demo_runs.run_start(story=story, server=server)
        return redirect(f"{reverse('demo-stories')}?run={run_id}")


class StoryRunView(DemoView):
    """The narrative so far, as the fragment the page swaps in (it stops polling at the verdict)."""

    def get(self, request: HttpRequest, run_id: str) -> HttpResponse:
        return render(request, "demo/_run.html", {"run": demo_runs.run_read(run_id)})
