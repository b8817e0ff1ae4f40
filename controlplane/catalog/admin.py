from django.contrib import admin

from controlplane.catalog.models import Model
from controlplane.core.admin import ReadOnlyAdmin


@admin.register(Model)
class ModelAdmin(ReadOnlyAdmin):
    list_display = ("name", "tenant", "architecture", "parameter_count", "format", "created_at")
    list_filter = ("format",)
    search_fields = ("name",)
