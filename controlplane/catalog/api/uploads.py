"""``/api/v1/uploads/``: send a model to the platform's store in chunks, resume, verify, register.

1. ``POST /uploads/`` with the model's name and its files (name, size, sha256);
2. ``PUT /uploads/<id>/chunk/?file=<name>&offset=<n>`` with the raw bytes
   (``Content-Type: application/octet-stream``), offsets as the server holds them;
3. ``GET /uploads/<id>/`` tells what was received per file, to resume after a broken chunk;
4. ``POST /uploads/<id>/complete/`` verifies every sha256 and registers the catalog model.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.catalog import uploads
from controlplane.catalog.api.serializers import ModelDetailSerializer
from controlplane.catalog.models import Upload
from controlplane.catalog.naming import SERVED_NAME
from controlplane.catalog.selectors import upload_get, upload_list
from controlplane.core.api import InputSerializer, TenantChoiceMixin, TenantSlugField
from controlplane.core.exceptions import ValidationFailed
from controlplane.tenancy.api.base import ScopedViewSet
from controlplane.tenancy.choices import Perm


class UploadFileInput(InputSerializer):
    name = serializers.CharField(max_length=1000, help_text="Relative path in the model, e.g. model.safetensors.")
    size = serializers.IntegerField(min_value=0)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", help_text="sha256 of the whole file, hex.")


class UploadCreateInput(TenantChoiceMixin, InputSerializer):
    name = serializers.RegexField(
        SERVED_NAME,
        max_length=100,
        help_text="Name of the catalog model the upload becomes.",
        error_messages={"invalid": "Use 1-100 letters, digits and . _ : / -, starting with a letter or digit."},
    )
    description = serializers.CharField(max_length=500, allow_blank=True, required=False)
    files = serializers.ListField(child=UploadFileInput(), min_length=1, max_length=uploads.MAX_FILES)


class UploadFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    received = serializers.IntegerField(help_text="Bytes the server holds; the next chunk's offset.")


class UploadSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()
    files = serializers.SerializerMethodField()
    model: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = Upload
        fields = ("id", "tenant", "name", "description", "status", "total_bytes", "files", "model", "created_at")
        read_only_fields = fields

    @extend_schema_field(UploadFileSerializer(many=True))
    def get_files(self, obj: Upload) -> list[dict[str, Any]]:
        have = uploads.received(obj)
        return [{**f, "received": have[f["name"]]} for f in obj.files]


class ChunkParser(BaseParser):
    """The raw body of a chunk, left as the request stream: the service reads it in pieces."""

    media_type = "application/octet-stream"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return stream


class ChunkQuery(serializers.Serializer):
    """The query string of a chunk (strings, so not the strict JSON ``InputSerializer``)."""

    file = serializers.CharField(max_length=1000)
    offset = serializers.IntegerField(min_value=0)


@extend_schema_view(
    list=extend_schema(summary="List uploads in progress and done"),
    retrieve=extend_schema(summary="Show an upload with the bytes received per file (to resume)"),
)
@extend_schema(tags=["models"])
class UploadViewSet(ScopedViewSet):
    serializer_class = UploadSerializer
    http_method_names = ["get", "post", "put", "delete", "head", "options"]  # PUT: chunks only
    filter_fields: ClassVar[dict[str, serializers.Field]] = {"tenant": serializers.SlugField(max_length=50)}
    ordering_fields = ("id", "created_at")
    list_perm = Perm.MODEL_VIEW

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Upload]:
        return upload_list(access=self.access, filters=filters)

    def select_one(self, lookup: str) -> Upload:
        return upload_get(access=self.access, pk=int(lookup))

    def writable(self) -> Upload:
        upload: Upload = self.get_object()
        self.access.require(upload.tenant_id, Perm.MODEL_CHANGE)
        return upload

    @extend_schema(summary="Open an upload: the model's name and its files", request=UploadCreateInput)
    def create(self, request: Request) -> Response:
        data = self.validated(UploadCreateInput)
        tenant = self.tenant_for_write(data.pop("tenant", None), Perm.MODEL_CHANGE)
        upload = uploads.upload_create(actor=self.actor, tenant=tenant, **data)
        return self.output(upload, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Append a chunk of a file at the offset the server holds",
        request={"application/octet-stream": bytes},
        parameters=[
            OpenApiParameter("file", str, required=True, description="The declared file name."),
            OpenApiParameter("offset", int, required=True, description="Where the chunk starts (bytes received)."),
        ],
        responses={200: UploadFileSerializer},
    )
    @action(detail=True, methods=["put"], parser_classes=[ChunkParser])
    def chunk(self, request: Request, pk: str) -> Response:
        upload = self.writable()
        query = ChunkQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        length = _content_length(request)
        name, offset = query.validated_data["file"], query.validated_data["offset"]
        done = uploads.upload_chunk(upload=upload, name=name, offset=offset, length=length, stream=request.data)
        entry = next(f for f in upload.files if f["name"] == name)
        return Response({**entry, "received": done})

    @extend_schema(
        summary="Verify every file's sha256 and register the model",
        request=None,
        responses={201: ModelDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def complete(self, request: Request, pk: str) -> Response:
        model = uploads.upload_complete(actor=self.actor, upload=self.writable())
        return Response(ModelDetailSerializer(model, context=self.get_serializer_context()).data, status=201)

    @extend_schema(summary="Abort an open upload (its received bytes are removed)")
    def destroy(self, request: Request, pk: str) -> Response:
        uploads.upload_delete(actor=self.actor, upload=self.writable())
        return Response(status=status.HTTP_204_NO_CONTENT)


def _content_length(request: Request) -> int:
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw.isdigit() or int(raw) == 0:
        raise ValidationFailed("No chunk.", field_errors={"chunk": ["Send the bytes with a Content-Length."]})
    return int(raw)
