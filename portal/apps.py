from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Tessera portal"

    def ready(self) -> None:
        from portal import schema  # noqa: F401  (registers OpenAPI extensions)
