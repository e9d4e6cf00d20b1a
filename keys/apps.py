from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Vault and key sets"

    def ready(self) -> None:
        from keys import access  # noqa: F401  (registers the access rules)
        from keys.vault import vault_check_configuration

        # A malformed or unreadable master key stops the process now, not at the first job.
        vault_check_configuration()
