"""Revisions of a deployment's replica template, its rollout policy, and its rollouts.

Imported by ``controlplane.deployments.models`` (Django finds models there); written only by
``controlplane.deployments.revisions`` and ``controlplane.deployments.rollouts``.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from controlplane.deployments.choices import RolloutState, RolloutStrategy, Sticky


class ImmutableRow(Exception):
    """A revision is history: it is never changed after it was written."""


class Revision(models.Model):
    """One immutable, numbered snapshot of a deployment's replica template.

    ``number`` is also the ``template_generation`` its replicas carry (the ``hangar.generation``
    label), so a replica always says which revision it runs.
    """

    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey("deployments.Deployment", on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveBigIntegerField()
    # The template fields (``TEMPLATE_SPEC_FIELDS``), "model" (id) and "model_name", "faults".
    spec = models.JSONField(default=dict)
    actor = models.CharField(max_length=150, blank=True, default="")
    reason = models.CharField(max_length=500, blank=True, default="")
    rollback_of = models.PositiveBigIntegerField(null=True, blank=True)  # the revision it copies
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment_id", "-number"]
        constraints = [models.UniqueConstraint(fields=["deployment", "number"], name="revision_unique_number")]

    def __str__(self) -> str:
        return f"revision {self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ImmutableRow("Revisions are immutable; make a new one.")
        super().save(*args, **kwargs)


class RolloutPolicy(models.Model):
    """How a deployment moves to a new revision. No row: rolling with automatic surge/unavailable."""

    deployment = models.OneToOneField(
        "deployments.Deployment", on_delete=models.CASCADE, primary_key=True, related_name="rollout_policy"
    )
    strategy = models.CharField(max_length=16, choices=RolloutStrategy.choices, default=RolloutStrategy.ROLLING)
    # A count ("1") or a percentage of replicas ("25%"); "" = chosen from the free GPUs.
    max_surge = models.CharField(max_length=8, blank=True, default="")
    max_unavailable = models.CharField(max_length=8, blank=True, default="")
    # [{"weight": 10, "pause_seconds": 30}, ...]; pause_seconds null = wait for a promote.
    steps = models.JSONField(default=list, blank=True)
    # {"min_requests", "max_error_rate", "max_p95_latency_ratio", "max_ttft_ratio"}
    analysis = models.JSONField(default=dict, blank=True)
    sticky = models.CharField(max_length=16, choices=Sticky.choices, default=Sticky.REQUEST)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.strategy} policy of {self.deployment_id}"


class Rollout(models.Model):
    """One move from a stable revision to a new one, step by step; its history stays."""

    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey("deployments.Deployment", on_delete=models.CASCADE, related_name="rollouts")
    strategy = models.CharField(max_length=16, choices=RolloutStrategy.choices)
    stable_revision = models.PositiveBigIntegerField()
    canary_revision = models.PositiveBigIntegerField()
    state = models.CharField(max_length=16, choices=RolloutState.choices, default=RolloutState.PROGRESSING)
    step = models.PositiveIntegerField(default=0)
    weight = models.PositiveSmallIntegerField(default=0)  # % of requests the canary gets
    steps = models.JSONField(default=list, blank=True)  # the policy's steps when it started
    analysis_policy = models.JSONField(default=dict, blank=True)
    sticky = models.CharField(max_length=16, choices=Sticky.choices, default=Sticky.REQUEST)
    # The last analysis: {"stable": {...}, "canary": {...}, "verdict": "...", "at": iso}
    analysis = models.JSONField(default=dict, blank=True)
    detail = models.CharField(max_length=500, blank=True, default="")
    reason = models.CharField(max_length=1000, blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    step_started_at = models.DateTimeField(null=True, blank=True)
    first_error_at = models.DateTimeField(null=True, blank=True)  # the canary's first failed request
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["deployment_id", "-id"]
        indexes = [models.Index(fields=["deployment", "state"])]

    def __str__(self) -> str:
        return f"rollout {self.stable_revision}->{self.canary_revision} ({self.state})"
