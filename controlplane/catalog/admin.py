from django.contrib import admin

from controlplane.catalog.models import Model


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "architecture", "parameter_count", "format", "created_at")
    list_filter = ("format",)
    search_fields = ("name",)
