from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "controlplane.tenancy"
    label = "tenancy"

    def ready(self) -> None:
        from controlplane.tenancy import signals  # noqa: F401  (connects the receivers)
