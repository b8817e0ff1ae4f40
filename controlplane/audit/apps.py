from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "controlplane.audit"
    label = "audit"

    def ready(self) -> None:
        from controlplane.audit import guard

        guard.connect()
