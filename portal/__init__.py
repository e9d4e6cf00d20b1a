"""The Django project: settings, URL wiring, ASGI/WSGI entry points, Celery app, base pages."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
