from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    label = "console"

    def ready(self) -> None:
        # Audit every login and failed login (the receivers connect on import).
        from console.dashboard import logins  # noqa: F401
