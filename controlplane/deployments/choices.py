"""Status values of targets, deployments and replicas."""

from __future__ import annotations

from django.db import models


class TargetKind(models.TextChoices):
    LOCAL = "local", "Local processes"
    DOCKER = "docker", "Docker host"
    KUBERNETES = "kubernetes", "Kubernetes cluster"


class KubeAuth(models.TextChoices):
    IN_CLUSTER = "in_cluster", "The worker's in-cluster service account"
    KUBECONFIG = "kubeconfig", "An uploaded kubeconfig"


class KubeEndpoints(models.TextChoices):
    """How the gateway reaches a Kubernetes target's replicas."""

    POD_IP = "pod_ip", "Each ready pod by its IP (the gateway balances per pod)"
    SERVICE = "service", "The deployment's Service (the gateway balances per Service, kube-proxy per pod)"


class Phase(models.TextChoices):
    PENDING = "Pending", "Pending"
    DEPLOYING = "Deploying", "Deploying"
    RUNNING = "Running", "Running"
    DEGRADED = "Degraded", "Degraded"
    SCALING = "Scaling", "Scaling"
    WAKING = "Waking", "Waking"  # scaled to zero, a request arrived: held while a replica starts
    STOPPED = "Stopped", "Stopped"
    FAILED = "Failed", "Failed"
    DELETING = "Deleting", "Deleting"
    ROLLED_BACK = "RolledBack", "Rolled back"  # a canary failed its analysis; stable serves

    @classmethod
    def serving(cls) -> set[str]:
        """Phases in which the gateway may route to the deployment's ready replicas."""
        return {cls.RUNNING, cls.DEGRADED, cls.SCALING, cls.DEPLOYING, cls.WAKING, cls.ROLLED_BACK}


class ReplicaState(models.TextChoices):
    STARTING = "starting", "Starting"
    READY = "ready", "Ready"
    UNHEALTHY = "unhealthy", "Unhealthy"
    TERMINATING = "terminating", "Terminating"
    EXITED = "exited", "Exited"


class EventType(models.TextChoices):
    NORMAL = "Normal", "Normal"
    WARNING = "Warning", "Warning"


class ConditionType(models.TextChoices):
    READY = "Ready", "Ready"
    PROGRESSING = "Progressing", "Progressing"
    AVAILABLE = "Available", "Available"
    BACKEND_REACHABLE = "BackendReachable", "Backend reachable"


class DesiredState(models.TextChoices):
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    DELETED = "deleted", "Deleted"


class ProgressStep(models.TextChoices):
    """Steps of ``Deployment.progress`` (written by the reconciler, shown by the detail page),
    in the order a replica goes through them; ``FAILED`` ends any of them."""

    DOWNLOADING_MODEL = "downloading_model", "Downloading model"
    STARTING = "starting", "Starting"
    LOADING_MODEL = "loading_model", "Loading model"
    WARMING_UP = "warming_up", "Warming up"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"

    @classmethod
    def ordered(cls) -> list[ProgressStep]:
        """The steps of a start-up, in order (the detail page lists these)."""
        return [step for step in cls if step is not cls.FAILED]


class RolloutStrategy(models.TextChoices):
    """How a new revision replaces the running one."""

    ROLLING = "rolling", "Rolling (max surge / max unavailable)"
    CANARY = "canary", "Canary (weighted steps with analysis)"


class RolloutState(models.TextChoices):
    PROGRESSING = "Progressing", "Progressing"
    PAUSED = "Paused", "Paused (waiting for a promote)"
    PROMOTED = "Promoted", "Promoted (replacing the rest)"
    COMPLETED = "Completed", "Completed"
    ROLLED_BACK = "RolledBack", "Rolled back"
    SUPERSEDED = "Superseded", "Superseded by a newer revision"

    @classmethod
    def active(cls) -> set[str]:
        """States in which the rollout still moves replicas or traffic."""
        return {cls.PROGRESSING, cls.PAUSED, cls.PROMOTED}

    @classmethod
    def splitting(cls) -> set[str]:
        """States in which the gateway splits traffic between stable and canary by weight."""
        return {cls.PROGRESSING, cls.PAUSED}


class Sticky(models.TextChoices):
    """What keeps a client on one side of a canary split."""

    REQUEST = "request", "Per request id (each request drawn on its own)"
    KEY = "key", "Per API key (a key stays on one side)"
