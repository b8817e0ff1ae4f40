from django.contrib import admin

from controlplane.core.admin import ReadOnlyAdmin
from controlplane.usage.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ("minute", "tenant", "api_key", "model", "requests", "prompt_tokens", "completion_tokens", "errors")
