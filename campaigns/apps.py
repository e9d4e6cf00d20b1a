from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Switch campaigns"

    def ready(self) -> None:
        from campaigns import access  # noqa: F401  (registers the access rules)
        from campaigns.tasks import on_switch_finished as listener
        from campaigns.tasks import sweep
        from jobs.hooks import on_sweep
        from switches.hooks import on_switch_finished

        on_switch_finished(listener)
        on_sweep("campaigns", sweep)
