"""Revisions, rollback, rollout policy and canary control of a deployment, as actions of
``DeploymentViewSet`` (``/api/v1/deployments/{id}/revisions/`` and friends).

Reads need the deployment's view permission (its selector answers 404 to other tenants); writes
need ``deployment.change``; fault injection needs a platform admin. Thin: selector, serializer,
service.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.core.exceptions import NotFound, ValidationFailed
from controlplane.deployments import revisions, rollouts
from controlplane.deployments.choices import RolloutStrategy, Sticky
from controlplane.deployments.models import Deployment, Revision, RolloutPolicy
from controlplane.tenancy.access import is_platform_admin
from controlplane.tenancy.api.base import ScopedViewSet

REVISION_FIELDS = ("number", "spec", "actor", "reason", "rollback_of", "created_at")


class RevisionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Revision
        fields = REVISION_FIELDS
        read_only_fields = REVISION_FIELDS


class RevisionList(serializers.Serializer):
    """The newest 100 revisions, unpaginated: a deployment rarely has more worth a look."""

    results = RevisionSerializer(many=True, read_only=True)


class RollbackInput(serializers.Serializer):
    revision = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="The revision to restore.")


class StepInput(serializers.Serializer):
    weight = serializers.IntegerField(min_value=1, max_value=100)
    pause_seconds = serializers.IntegerField(
        min_value=0, max_value=rollouts.MAX_PAUSE_SECONDS, allow_null=True, required=False
    )


class AnalysisInput(serializers.Serializer):
    min_requests = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    max_error_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    max_p95_latency_ratio = serializers.FloatField(min_value=1.0, max_value=1000.0, required=False)
    max_ttft_ratio = serializers.FloatField(min_value=1.0, max_value=1000.0, required=False)


class RolloutPolicySerializer(serializers.Serializer):
    strategy = serializers.ChoiceField(choices=RolloutStrategy.choices, required=False)
    max_surge = serializers.CharField(max_length=8, allow_blank=True, required=False, help_text='e.g. "1" or "25%".')
    max_unavailable = serializers.CharField(max_length=8, allow_blank=True, required=False)
    steps = serializers.ListField(child=StepInput(), required=False, min_length=1, max_length=rollouts.MAX_STEPS)
    analysis = AnalysisInput(required=False)
    sticky = serializers.ChoiceField(choices=Sticky.choices, required=False)


class RolloutPolicyOutput(serializers.Serializer):
    """The policy as shown: every field filled in (the defaults where none was set)."""

    strategy = serializers.CharField(read_only=True)
    max_surge = serializers.CharField(read_only=True, help_text='"" when the default applies.')
    max_unavailable = serializers.CharField(read_only=True)
    steps = serializers.ListField(child=StepInput(), read_only=True)
    analysis = serializers.DictField(read_only=True)
    sticky = serializers.CharField(read_only=True)


class RolloutList(serializers.Serializer):
    results = serializers.ListField(child=serializers.DictField(), read_only=True, help_text="Newest first.")


class AbortInput(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, default="Aborted by hand")


class FaultsInput(serializers.Serializer):
    error_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    delay_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    delay_ms = serializers.FloatField(min_value=0.0, max_value=60_000, required=False)


def _policy_view(policy: RolloutPolicy) -> dict[str, Any]:
    return {
        "strategy": policy.strategy,
        "max_surge": policy.max_surge,
        "max_unavailable": policy.max_unavailable,
        "steps": policy.steps or (rollouts.DEFAULT_STEPS if policy.strategy == RolloutStrategy.CANARY else []),
        "analysis": {**rollouts.DEFAULT_ANALYSIS, **(policy.analysis or {})},
        "sticky": policy.sticky,
    }


class RolloutActions(ScopedViewSet):
    """The actions of ``DeploymentViewSet`` (its base) about revisions and rollouts."""

    def _changeable(self) -> Deployment:
        raise NotImplementedError  # DeploymentViewSet's: the deployment, if the caller may change it

    @extend_schema(
        summary="List the deployment's revisions (newest first, at most 100)",
        responses={200: RevisionList},
        operation_id="v1_deployments_revisions_list",
    )
    @action(detail=True, methods=["get"])
    def revisions(self, request: Request, pk: str) -> Response:
        deployment: Deployment = self.get_object()
        rows = revisions.revision_list(deployment=deployment)[:100]
        return Response({"results": RevisionSerializer(rows, many=True).data})

    @extend_schema(summary="Show one revision", responses={200: RevisionSerializer})
    @action(detail=True, methods=["get"], url_path=r"revisions/(?P<number>[0-9]{1,18})")
    def revision(self, request: Request, pk: str, number: str) -> Response:
        deployment: Deployment = self.get_object()
        return Response(RevisionSerializer(revisions.revision_get(deployment=deployment, number=int(number))).data)

    @extend_schema(
        summary="Compare two revisions: the fields that differ",
        parameters=[OpenApiParameter("a", int, required=True), OpenApiParameter("b", int, required=True)],
    )
    @action(detail=True, methods=["get"], url_path="revisions-diff")
    def revisions_diff(self, request: Request, pk: str) -> Response:
        deployment: Deployment = self.get_object()
        numbers = {}
        for name in ("a", "b"):
            raw = request.query_params.get(name, "")
            if not raw.isdigit() or len(raw) > 18:
                raise ValidationFailed("Invalid diff.", field_errors={name: ["A revision number."]})
            numbers[name] = int(raw)
        diff = revisions.revision_diff(deployment=deployment, a=numbers["a"], b=numbers["b"])
        return Response({"a": numbers["a"], "b": numbers["b"], "changes": diff})

    @extend_schema(
        summary="Roll back to a revision: a new revision with exactly its spec",
        request=RollbackInput,
        responses={202: None},
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str) -> Response:
        deployment = self._changeable()
        data = self.validated(RollbackInput)
        deployment = revisions.deployment_rollback(actor=self.actor, deployment=deployment, number=data["revision"])
        return self.output(deployment, status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Show or set the rollout policy (rolling surge/unavailable, canary steps and analysis)",
        request=RolloutPolicySerializer,
        responses={200: RolloutPolicyOutput},
    )
    @action(detail=True, methods=["get", "patch"], url_path="rollout-policy")
    def rollout_policy(self, request: Request, pk: str) -> Response:
        if request.method == "GET":
            return Response(_policy_view(rollouts.policy_of(self.get_object())))
        deployment = self._changeable()
        data = self.validated(RolloutPolicySerializer)
        if "steps" in data:
            data["steps"] = [dict(s) for s in data["steps"]]
        if "analysis" in data:
            data["analysis"] = dict(data["analysis"])
        policy = rollouts.rollout_policy_set(actor=self.actor, deployment=deployment, data=data)
        return Response(_policy_view(policy))

    @extend_schema(
        summary="The deployment's rollouts, newest first (the first one may be in progress)",
        responses={200: RolloutList},
    )
    @action(detail=True, methods=["get"])
    def rollouts(self, request: Request, pk: str) -> Response:
        deployment: Deployment = self.get_object()
        return Response({"results": [rollouts.rollout_view(r) for r in rollouts.rollout_list(deployment=deployment)]})

    def _canary(self) -> Any:
        deployment = self._changeable()
        rollout = rollouts.rollout_active(deployment.pk)
        if rollout is None:
            raise NotFound("No rollout in progress.")
        return rollout

    @extend_schema(
        summary="Promote the canary in progress: all traffic to it, its replicas replace the rest",
        request=None,
        responses={202: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["post"], url_path="rollout/promote")
    def rollout_promote(self, request: Request, pk: str) -> Response:
        rollout = rollouts.rollout_promote(actor=self.actor, rollout=self._canary())
        return Response(rollouts.rollout_view(rollout), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Abort the canary in progress: traffic back to stable, canary replicas removed",
        request=AbortInput,
        responses={202: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["post"], url_path="rollout/abort")
    def rollout_abort(self, request: Request, pk: str) -> Response:
        rollout = self._canary()
        data = self.validated(AbortInput)
        rollout = rollouts.rollout_abort(actor=self.actor, rollout=rollout, reason=data["reason"])
        return Response(rollouts.rollout_view(rollout), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Platform admins, tests only: make a share of requests fail or slow down", request=FaultsInput
    )
    @action(detail=True, methods=["post"])
    def faults(self, request: Request, pk: str) -> Response:
        if not is_platform_admin(request.user):
            raise NotFound("Not found.")  # tenants do not learn that the switch exists
        deployment = revisions.deployment_for_platform(pk=int(pk))
        data = self.validated(FaultsInput)
        deployment = revisions.deployment_faults_set(actor=self.actor, deployment=deployment, faults=data)
        return self.output(deployment, status.HTTP_202_ACCEPTED)
