"""Viewsets of targets, deployments (desired state), replicas and events (observed state).

Writes record desired state and enqueue work after commit; they answer 202 where the change
happens later (delete, scale, stop, start, restart) and never call a backend themselves.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from django.db.models import F, QuerySet
from django.utils.module_loading import import_string
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.catalog.models import Model
from controlplane.catalog.selectors import model_list
from controlplane.core.exceptions import DomainError, NotFound, ValidationFailed
from controlplane.deployments import selectors, services
from controlplane.deployments.api.rollouts import RolloutActions
from controlplane.deployments.api.serializers import (
    DeploymentCreateInput,
    DeploymentSerializer,
    DeploymentUpdateInput,
    EventSerializer,
    ReplicaLogsSerializer,
    ReplicaSerializer,
    ScaleInput,
    TargetSerializer,
)
from controlplane.deployments.choices import EventType, Phase, ReplicaState, TargetKind
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target
from controlplane.tenancy.api.base import ScopedViewSet
from controlplane.tenancy.choices import Perm
from controlplane.tenancy.models import Tenant

logger = logging.getLogger(__name__)

# The engine provides log tailing; named, not imported (controlplane never imports workers).
REPLICA_LOGS = "workers.logs.replica_logs"
DEFAULT_LOG_TAIL = 200
MAX_LOG_TAIL = 5000

DEPLOYMENT_ID = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="Deployment id.")


@extend_schema_view(
    list=extend_schema(summary="List the targets granted to your tenants"),
    retrieve=extend_schema(summary="Show a granted target"),
)
@extend_schema(tags=["targets"])
class TargetViewSet(ScopedViewSet):
    """Where replicas run, as tenants see it: targets granted to their tenants, with name, kind,
    health and capacity. Read-only: platform admins manage targets under /api/v1/platform/targets/."""

    serializer_class = TargetSerializer
    http_method_names = ["get", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "tenant": serializers.SlugField(max_length=50, help_text="Targets granted to this tenant."),
        "kind": serializers.ChoiceField(choices=TargetKind.choices),
    }
    ordering_fields = ("id", "name", "kind")
    list_perm = Perm.TARGET_VIEW

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Target]:
        # Only what a tenant sees (TargetSerializer, public_health): not the connection
        # settings, credentials and other JSON columns of every target on the page.
        shown = ("id", "name", "kind", "health", "health_checked_at", "gpu_inventory", "labels")
        return selectors.target_list(access=self.access, filters=filters).only(*shown)

    def select_one(self, lookup: str) -> Target:
        return selectors.target_get(access=self.access, pk=int(lookup))

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.MethodNotAllowed(
            str(request.method),
            detail="Targets are read-only for tenants: platform administrators create, change and check them.",
        )


@extend_schema_view(list=extend_schema(summary="List deployments"), retrieve=extend_schema(summary="Show a deployment"))
@extend_schema(tags=["deployments"])
class DeploymentViewSet(RolloutActions):
    """Desired state of a served model. Every change bumps ``generation``; a worker reconciles
    it and reports ``observed_generation``, ``phase`` and conditions."""

    serializer_class = DeploymentSerializer
    list_from_values = True  # 50 columns a row: building 500 model instances was a third of the page
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "tenant": serializers.SlugField(max_length=50),
        "phase": serializers.ChoiceField(choices=Phase.choices),
        "name": serializers.CharField(max_length=63),
        "served_model_name": serializers.CharField(max_length=100),
        "model": serializers.CharField(max_length=100, help_text="Model name."),
        "target": serializers.CharField(max_length=100, help_text="Target name."),
    }
    ordering_fields = ("id", "name", "phase", "created_at", "updated_at", "replicas", "ready_replicas")
    list_perm = Perm.DEPLOYMENT_VIEW

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Deployment]:
        # A list needs only the names of the model and target, not their JSON columns: join
        # for two strings instead of loading three whole rows per deployment.
        return (
            selectors.deployment_list(access=self.access, filters=filters)
            .select_related(None)
            .annotate(model_name=F("model__name"), target_name=F("target__name"))
        )

    def select_one(self, lookup: str) -> Deployment:
        return selectors.deployment_get(access=self.access, pk=int(lookup))

    def _changeable(self) -> Deployment:
        deployment: Deployment = self.get_object()
        self.access.require(deployment.tenant_id, Perm.DEPLOYMENT_CHANGE)
        return deployment

    def _model_in(self, tenant_id: int, model_id: int, tenant_slug: str) -> Model:
        # Same answer for a missing model and another tenant's: nothing leaks.
        model = model_list(access=self.access).filter(pk=model_id, tenant_id=tenant_id).first()
        if model is None:
            raise ValidationFailed(
                "Unknown model.", field_errors={"model": [f"No model with id {model_id} in tenant {tenant_slug!r}."]}
            )
        return model

    def _target_in(self, tenant: Tenant, target_id: int) -> Target:
        # Same answer for a missing target and one not granted to the tenant: nothing leaks.
        target = selectors.target_list(access=self.access, filters={"tenant": tenant.slug}).filter(pk=target_id).first()
        if target is None:
            raise ValidationFailed(
                "Unknown target.",
                field_errors={"target": [f"No target with id {target_id} is granted to tenant {tenant.slug!r}."]},
            )
        return target

    @extend_schema(
        summary="Create a deployment (a model of the tenant, on a target granted to it)",
        request=DeploymentCreateInput,
        responses={201: DeploymentSerializer},
    )
    def create(self, request: Request) -> Response:
        data = self.validated(DeploymentCreateInput)
        tenant = self.tenant_for_write(data.pop("tenant", None), Perm.DEPLOYMENT_CHANGE)
        errors: dict[str, list[str]] = {}
        model = target = None
        try:
            model = self._model_in(tenant.pk, data.pop("model"), tenant.slug)
        except ValidationFailed as exc:
            errors |= exc.field_errors
        try:
            target = self._target_in(tenant, data.pop("target"))
        except ValidationFailed as exc:
            errors |= exc.field_errors
        if errors or model is None or target is None:
            raise ValidationFailed("Invalid deployment.", field_errors=errors)
        deployment = services.deployment_create(actor=self.actor, tenant=tenant, model=model, target=target, data=data)
        return self.output(deployment, status.HTTP_201_CREATED)

    @extend_schema(summary="Change the spec (template fields roll the replicas)", request=DeploymentUpdateInput)
    def partial_update(self, request: Request, pk: str) -> Response:
        deployment = self._changeable()
        data = self.validated(DeploymentUpdateInput)
        if "model" in data:
            data["model"] = self._model_in(deployment.tenant_id, data["model"], self.access.slugs[deployment.tenant_id])
        return self.output(services.deployment_update(actor=self.actor, deployment=deployment, data=data))

    @extend_schema(
        summary="Delete: the deployment goes to Deleting; a worker removes its replicas, then the row",
        responses={202: DeploymentSerializer},
    )
    def destroy(self, request: Request, pk: str) -> Response:
        deployment = services.deployment_delete(actor=self.actor, deployment=self._changeable())
        return self.output(deployment, status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Set the number of replicas", request=ScaleInput, responses={202: DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, pk: str) -> Response:
        deployment = self._changeable()
        data = self.validated(ScaleInput)
        deployment = services.deployment_scale(actor=self.actor, deployment=deployment, replicas=data["replicas"])
        return self.output(deployment, status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Stop every replica (the spec is kept)", request=None, responses={202: DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str) -> Response:
        deployment = services.deployment_stop(actor=self.actor, deployment=self._changeable())
        return self.output(deployment, status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Start a stopped deployment", request=None, responses={202: DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str) -> Response:
        deployment = services.deployment_start(actor=self.actor, deployment=self._changeable())
        return self.output(deployment, status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Replace every replica, one at a time", request=None, responses={202: DeploymentSerializer})
    @action(detail=True, methods=["post"])
    def restart(self, request: Request, pk: str) -> Response:
        deployment = services.deployment_restart(actor=self.actor, deployment=self._changeable())
        return self.output(deployment, status.HTTP_202_ACCEPTED)


@extend_schema_view(list=extend_schema(summary="List replicas"), retrieve=extend_schema(summary="Show a replica"))
@extend_schema(tags=["replicas"])
class ReplicaViewSet(ScopedViewSet):
    """Observed replicas of deployments (read-only: the reconciler owns them)."""

    serializer_class = ReplicaSerializer
    http_method_names = ["get", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "deployment": DEPLOYMENT_ID,
        "state": serializers.ChoiceField(choices=ReplicaState.choices),
    }
    ordering_fields = ("id", "name", "state", "created_at", "last_heartbeat_at")
    list_perm = Perm.DEPLOYMENT_VIEW

    def select_list(self, filters: dict[str, Any]) -> QuerySet[Replica]:
        # Only the deployment's name, not its whole row (JSON columns) per replica.
        return (
            selectors.replica_list(access=self.access, filters=filters)
            .select_related(None)
            .annotate(deployment_name=F("deployment__name"))
        )

    def select_one(self, lookup: str) -> Replica:
        return selectors.replica_get(access=self.access, pk=int(lookup))

    @extend_schema(
        summary="The last lines of a replica's log",
        parameters=[
            OpenApiParameter(
                "tail", int, description=f"Lines to return (1-{MAX_LOG_TAIL}, default {DEFAULT_LOG_TAIL})."
            )
        ],
        responses={
            200: ReplicaLogsSerializer,
            501: OpenApiResponse(description="Log tailing is not available in this build."),
            502: OpenApiResponse(description="The backend could not be asked for logs."),
        },
    )
    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: str) -> Response:
        replica = self.get_object()
        tail_field = serializers.IntegerField(min_value=1, max_value=MAX_LOG_TAIL)
        raw_tail = request.query_params.get("tail")
        try:
            tail = DEFAULT_LOG_TAIL if raw_tail in (None, "") else tail_field.run_validation(raw_tail)
        except serializers.ValidationError as exc:
            raise ValidationFailed("Invalid tail.", field_errors={"tail": [str(m) for m in exc.detail]}) from None
        try:
            replica_logs = import_string(REPLICA_LOGS)
        except ImportError:
            return Response(
                {
                    "detail": "Log tailing is not available yet: this build has no "
                    f"{REPLICA_LOGS}. Use the backend's own tools (docker logs, kubectl logs).",
                    "code": "not_implemented",
                },
                status=status.HTTP_501_NOT_IMPLEMENTED,
            )
        try:
            text = replica_logs(access=self.access, replica_id=replica.pk, tail=tail)
        except DomainError:
            raise  # the engine's own answer (404, 503), rendered by the exception handler
        except Exception as exc:  # an unexpected backend problem; the API itself is fine
            logger.warning("could not read logs of replica %s: %s", replica.pk, exc)
            return Response(
                {"detail": f"Could not read the replica's logs from its backend: {exc}", "code": "backend_error"},
                status=status.HTTP_502_BAD_GATEWAY,
            )
        return Response(ReplicaLogsSerializer({"replica": replica.pk, "tail": tail, "logs": str(text)}).data)


@extend_schema_view(
    list=extend_schema(summary="List deployment events (newest first)"),
    retrieve=extend_schema(summary="Show an event"),
)
@extend_schema(tags=["events"])
class EventViewSet(ScopedViewSet):
    """The append-only timeline of deployments: what happened, why, and who asked for it."""

    serializer_class = EventSerializer
    http_method_names = ["get", "head", "options"]
    filter_fields: ClassVar[dict[str, serializers.Field]] = {
        "deployment": DEPLOYMENT_ID,
        "type": serializers.ChoiceField(choices=EventType.choices),
        "reason": serializers.CharField(max_length=64),
    }
    ordering_fields = ("id", "created_at", "reason", "type")
    list_perm = Perm.DEPLOYMENT_VIEW

    def select_list(self, filters: dict[str, Any]) -> QuerySet[DeploymentEvent]:
        return selectors.event_list(access=self.access, filters=filters)

    def select_one(self, lookup: str) -> DeploymentEvent:
        event = selectors.event_list(access=self.access).filter(pk=int(lookup)).first()
        if event is None:
            raise NotFound("Event not found.")
        return event
