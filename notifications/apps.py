from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications (webhooks)"

    def ready(self) -> None:
        from notifications import access  # noqa: F401  (registers the access rules)
        from notifications.services import deliveries_for_event
        from portal.events import subscribe

        # Every live event published to organisations also becomes webhook deliveries, in the
        # publishing transaction (see notifications.services.deliveries_for_event).
        subscribe(deliveries_for_event)
