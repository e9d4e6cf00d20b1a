from django.apps import AppConfig


class SwitchesConfig(AppConfig):
    name = "switches"
    verbose_name = "Provider switches"

    def ready(self) -> None:
        from jobs.hooks import on_job_finished, on_sweep
        from switches import access  # noqa: F401  (registers the access rules)
        from switches.tasks import on_job_finished as listener
        from switches.tasks import sweep

        on_job_finished(listener)
        on_sweep("switches", sweep)
