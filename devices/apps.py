from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = "Devices, secure elements and security domains"

    def ready(self) -> None:
        from devices import access  # noqa: F401  (registers the access rules)
