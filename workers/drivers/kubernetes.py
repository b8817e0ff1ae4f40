"""Kubernetes driver: one Deployment + one Service per Hangar deployment, via the official client.

Kubernetes has its own controller, so this driver is *group managed*: the reconciler hands it the
whole replica spec and count (``apply``); the pod template carries ``hangar.generation``, so a
template change is a Kubernetes rolling update (maxSurge 1, maxUnavailable 0: never below the
ready count asked) while a scale only changes ``spec.replicas``. Pods are observed by labels;
readiness comes from the pod's Ready condition (readiness probe on ``/health``). Manifests are
built as the client's model objects (``V1Deployment``...), never as loose dicts.

The replica's bearer token lives in a Secret of the same name (``build_secret``) that the pod
takes ``HANGAR_RUNTIME_TOKEN`` from, so no manifest the driver writes holds it in plain text;
the pod template carries a digest of it, so a new token (``SECRET_KEY`` rotated) rolls the pods.
A model from ``s3://`` or ``hf://`` is fetched by each pod's init container (``fetch-model``: the
runtime image's ``python -m workers.runtime.fetch``) into an ``emptyDir``, or into the node's cache
directory when the target names one, and the runtime mounts it read-only; the fetch's plan and the
tenant's credential are two more keys of the same Secret, mounted for the init container alone.

Updates are ``replace`` calls carrying the ``resourceVersion`` just read: a concurrent writer
makes them fail with 409, and the driver reads again and retries once. The gateway reaches
replicas by pod IP or, where the target says so (``Target.kube_endpoints``), through the
deployment's Service: then one endpoint per deployment is reported, carried by its first ready
pod. ``PodWatch`` follows pod changes for ``workers.watch``: a list, then a watch from its
``resourceVersion`` resumed from the last event or bookmark, and a fresh list after ``410 Gone``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from controlplane.deployments.choices import KubeAuth, KubeEndpoints
from controlplane.deployments.models import Target
from controlplane.deployments.selectors import grant_for
from workers.drivers.base import (
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_INSTANCE,
    LABEL_TENANT,
    BackendEvents,
    BackendState,
    Driver,
    ObservedReplica,
    PermanentDriverError,
    ReplicaSpec,
    TemporaryDriverError,
)
from workers.drivers.health import Reason, classify_network, number, report, version_text
from workers.drivers.images import RuntimeImages
from workers.runtime.auth import TOKEN_ENV

PORT = 8000
MODEL_MOUNT = "/model"
SPEC_HASH = "hangar.spec-hash"
TOKEN_DIGEST = "hangar.token-digest"
TOKEN_KEY = "token"  # the key in the Secret's data
FETCH_PLAN_KEY = "fetch-plan.json"  # the Secret's keys for the fetch init container
FETCH_CREDENTIALS_KEY = "fetch-credentials.json"
FETCH_INPUT = "/run/hangar-fetch"
FETCH_CACHE = "/cache"
MODEL_HASH = "hangar.model-hash"
RUNTIME_UID = 10001
GPU_RESOURCE = "nvidia.com/gpu"
STARTUP_BUDGET_S = 600  # model loading: the startup probe allows this long before liveness counts
# Kubeconfig entries that name files or commands of whoever loads it, i.e. the worker: refused,
# so an uploaded kubeconfig carries its credentials inline (``*-data``, ``token``) or not at all.
WORKER_SIDE_USER_KEYS = {"exec", "auth-provider", "tokenFile", "client-certificate", "client-key"}
WORKER_SIDE_CLUSTER_KEYS = {"certificate-authority"}
_FIELD_PATH = re.compile(r"[A-Za-z0-9_.\[\]/-]{1,120}")
WATCH_TIMEOUT_S = 300  # a watch request ends after this long (the server may end it sooner); resumed
CRASH_LOOP = "CrashLoopBackOff"
# What the API calls the driver makes do, as RBAC verbs and resources (for 403 answers).
_VERBS = {"read": "get", "list": "list", "create": "create", "replace": "update", "patch": "patch", "delete": "delete"}
_RESOURCES = {
    "deployment": "deployments.apps",
    "service": "services",
    "secret": "secrets",
    "pod": "pods",
    "pod_log": "pods/log",
    "event": "events",
    "node": "nodes",
}

logger = logging.getLogger(__name__)


def name_prefix(instance: str, deployment_id: int) -> str:
    """``hgr-<instance hash>-<id>-``: two installations sharing a namespace never collide."""
    return f"hgr-{hashlib.sha256(instance.encode()).hexdigest()[:6]}-{deployment_id}-"


def resource_name(spec: ReplicaSpec) -> str:
    """DNS-1035 name of the Deployment and Service, at most 63 characters."""
    return (name_prefix(spec.instance, spec.deployment_id) + spec.deployment_name)[:63].rstrip("-")


def service_url(service: str, namespace: str) -> str:
    """The in-cluster address of a deployment's Service (cluster DNS)."""
    return f"http://{service}.{namespace}.svc:{PORT}"


def rbac_words(func: Any) -> tuple[str, str]:
    """(verb, resource) of a client method, e.g. ``create_namespaced_deployment`` -> create deployments.apps."""
    name = getattr(func, "__name__", "")
    verb, _, rest = name.partition("_")
    rest = rest.removeprefix("namespaced_")
    return _VERBS.get(verb, verb or "call"), _RESOURCES.get(rest, rest or "resources")


def _selector(instance: str, deployment_id: int) -> dict[str, str]:
    return {LABEL_INSTANCE: instance, LABEL_DEPLOYMENT: str(deployment_id)}


def _label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _quantity_cpu(cpus: float) -> str:
    return f"{round(cpus * 1000)}m"


def model_volume(spec: ReplicaSpec, config: dict[str, Any]) -> k8s.V1Volume:
    """The model directory as a volume: a hostPath on the node (default) or a PVC; for a model
    the pod fetches, the cache it fetches into (``fetch_cache_volume``)."""
    if spec.model_fetch is not None:
        return fetch_cache_volume(config)
    if config.get("type") == "pvc":
        return k8s.V1Volume(
            name="model",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=config["claimName"], read_only=True
            ),
        )
    return k8s.V1Volume(
        name="model", host_path=k8s.V1HostPathVolumeSource(path=config.get("path") or spec.model_path, type="Directory")
    )


def fetch_cache_volume(config: dict[str, Any]) -> k8s.V1Volume:
    """Where a pod's init container fetches the model: the node's cache directory when the target
    names one (``model_volume.cachePath``, shared by the pods on that node, which must exist and be
    writable by the runtime's user), else an ``emptyDir`` of the pod's own."""
    cache_path = config.get("cachePath")
    if cache_path:
        return k8s.V1Volume(name="model", host_path=k8s.V1HostPathVolumeSource(path=cache_path, type="Directory"))
    return k8s.V1Volume(name="model", empty_dir=k8s.V1EmptyDirVolumeSource())


def fetch_init_container(spec: ReplicaSpec, *, image: str) -> k8s.V1Container:
    """The init container that fetches and verifies the model (``python -m workers.runtime.fetch``)
    before the runtime starts: its plan and the tenant's credential come from the deployment's
    Secret, mounted for it alone; nothing of it is in the command line."""
    assert spec.model_fetch is not None
    return k8s.V1Container(
        name="fetch-model",
        image=image,
        image_pull_policy="IfNotPresent",
        command=["python", "-m", "workers.runtime.fetch"],
        args=[
            "--plan",
            f"{FETCH_INPUT}/plan.json",
            "--credentials",
            f"{FETCH_INPUT}/credentials.json",
            "--cache",
            FETCH_CACHE,
            "--limit-bytes",
            str(spec.model_fetch.cache_limit_bytes),
            "--termination-log",
            "/dev/termination-log",
        ],
        termination_message_policy="FallbackToLogsOnError",
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": "250m", "memory": "256Mi"}, limits={"cpu": "1", "memory": "1Gi"}
        ),
        volume_mounts=[
            k8s.V1VolumeMount(name="model", mount_path=FETCH_CACHE),
            k8s.V1VolumeMount(name="fetch-input", mount_path=FETCH_INPUT, read_only=True),
        ],
        security_context=_security_context(),
    )


def fetch_input_volume(spec: ReplicaSpec) -> k8s.V1Volume:
    """The plan and credentials, from the deployment's Secret, for the init container."""
    return k8s.V1Volume(
        name="fetch-input",
        secret=k8s.V1SecretVolumeSource(
            secret_name=resource_name(spec),
            items=[
                k8s.V1KeyToPath(key=FETCH_PLAN_KEY, path="plan.json"),
                k8s.V1KeyToPath(key=FETCH_CREDENTIALS_KEY, path="credentials.json"),
            ],
            default_mode=0o400,
        ),
    )


def _security_context() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=RUNTIME_UID,
        run_as_group=RUNTIME_UID,
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
    )


def _refuse(cause: str) -> PermanentDriverError:
    return PermanentDriverError(
        f"The target's Kubernetes connection is refused: {cause}.", reason="KubeconfigInvalid", cause=cause
    )


def _named_entries(config: dict[str, Any], section: str, key: str) -> list[dict[str, Any]]:
    entries = config.get(section) or []
    if not isinstance(entries, list):
        raise _refuse(Reason.KUBECONFIG_INVALID)
    found = []
    for entry in entries:
        body = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(body, dict):
            raise _refuse(Reason.KUBECONFIG_INVALID)
        found.append(body)
    return found


def kubeconfig_client(content: str, *, context: str = "") -> k8s.ApiClient:
    """An API client from an uploaded kubeconfig's *content*, in a configuration of its own.

    Never reads ``~/.kube/config`` or ``$KUBECONFIG``, and refuses entries that would make the
    worker read its own files or run commands (exec plugins, auth providers, file paths).
    """
    import yaml
    from kubernetes import config as k8s_config

    if not content.strip():
        raise _refuse(Reason.KUBECONFIG_REQUIRED)
    try:
        config = yaml.safe_load(content)
    except yaml.YAMLError:
        raise _refuse(Reason.KUBECONFIG_INVALID) from None
    if not isinstance(config, dict):
        raise _refuse(Reason.KUBECONFIG_INVALID)
    users = _named_entries(config, "users", "user")
    clusters = _named_entries(config, "clusters", "cluster")
    if any(WORKER_SIDE_USER_KEYS & set(u) for u in users) or any(WORKER_SIDE_CLUSTER_KEYS & set(c) for c in clusters):
        raise _refuse(Reason.KUBECONFIG_REFUSED)
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config_from_dict(
            config, context=context or None, client_configuration=configuration, persist_config=False
        )
    except (k8s_config.ConfigException, ValueError, TypeError, KeyError, AttributeError, OSError):
        raise _refuse(Reason.KUBECONFIG_INVALID) from None
    return k8s.ApiClient(configuration)


def in_cluster_client() -> k8s.ApiClient:
    """An API client with the worker's own service account, in a configuration of its own."""
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except (k8s_config.ConfigException, OSError):
        raise _refuse(Reason.NOT_IN_CLUSTER) from None
    return k8s.ApiClient(configuration)


def target_namespace(target: Target, tenant_id: int | None) -> str:
    """The namespace of ``tenant_id``'s replicas on ``target``: its grant's, else the target's."""
    grant = grant_for(target_id=target.pk, tenant_id=tenant_id) if tenant_id is not None else None
    return (grant.namespace if grant else "") or target.kube_namespace or "default"


def build_deployment(
    spec: ReplicaSpec, *, replicas: int, namespace: str, image: str, volume: dict[str, Any]
) -> k8s.V1Deployment:
    """The apps/v1 Deployment running ``replicas`` pods of ``spec``."""
    selector = _selector(spec.instance, spec.deployment_id)
    labels = {**selector, LABEL_TENANT: str(spec.tenant_id)}
    pod_labels = {**labels, LABEL_GENERATION: str(spec.generation)}
    limits = {"cpu": _quantity_cpu(spec.cpus), "memory": f"{spec.memory_mb}Mi"}
    if spec.gpus:
        limits[GPU_RESOURCE] = str(spec.gpus)
    probe_action = k8s.V1HTTPGetAction(path="/health", port="http")
    env = [k8s.V1EnvVar(name="HANGAR_RUNTIME_PORT", value=str(PORT))]
    pod_annotations: dict[str, str] = {}
    if spec.token:
        env.append(
            k8s.V1EnvVar(
                name=TOKEN_ENV,
                value_from=k8s.V1EnvVarSource(
                    secret_key_ref=k8s.V1SecretKeySelector(name=resource_name(spec), key=TOKEN_KEY)
                ),
            )
        )
        pod_annotations[TOKEN_DIGEST] = hashlib.sha256(spec.token.encode()).hexdigest()[:16]
    container = k8s.V1Container(
        name="runtime",
        image=image,
        image_pull_policy="IfNotPresent",
        args=spec.runtime_args(model=MODEL_MOUNT, host="0.0.0.0", port=PORT),
        ports=[k8s.V1ContainerPort(name="http", container_port=PORT, protocol="TCP")],
        env=env,
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": _quantity_cpu(spec.cpus), "memory": f"{spec.memory_mb}Mi"}, limits=limits
        ),
        volume_mounts=[
            k8s.V1VolumeMount(
                name="model",
                mount_path=MODEL_MOUNT,
                read_only=True,
                sub_path=f"models/{spec.model_fetch.content_hash}" if spec.model_fetch is not None else None,
            )
        ],
        startup_probe=k8s.V1Probe(
            http_get=probe_action, period_seconds=2, failure_threshold=STARTUP_BUDGET_S // 2, timeout_seconds=2
        ),
        readiness_probe=k8s.V1Probe(http_get=probe_action, period_seconds=2, failure_threshold=3, timeout_seconds=2),
        liveness_probe=k8s.V1Probe(http_get=probe_action, period_seconds=10, failure_threshold=3, timeout_seconds=5),
        security_context=_security_context(),
    )
    init_containers = None
    volumes = [model_volume(spec, volume)]
    if spec.model_fetch is not None:
        init_containers = [fetch_init_container(spec, image=image)]
        volumes.append(fetch_input_volume(spec))
        pod_annotations[MODEL_HASH] = spec.model_fetch.content_hash
    tolerations = [
        k8s.V1Toleration(
            key=t.get("key"),
            operator=t.get("operator", "Equal"),
            value=t.get("value"),
            effect=t.get("effect") or None,
            toleration_seconds=t.get("tolerationSeconds"),
        )
        for t in spec.tolerations
    ]
    body = k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=k8s.V1ObjectMeta(name=resource_name(spec), namespace=namespace, labels=labels, annotations={}),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels=selector),
            strategy=k8s.V1DeploymentStrategy(
                type="RollingUpdate",
                rolling_update=k8s.V1RollingUpdateDeployment(max_surge=1, max_unavailable=0),
            ),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=pod_labels, annotations=pod_annotations or None),
                spec=k8s.V1PodSpec(
                    init_containers=init_containers,
                    containers=[container],
                    volumes=volumes,
                    node_selector=spec.node_selector or None,
                    tolerations=tolerations or None,
                    termination_grace_period_seconds=30,
                    automount_service_account_token=False,
                ),
            ),
        ),
    )
    digest = hashlib.sha256(
        json.dumps(k8s.ApiClient().sanitize_for_serialization(body), sort_keys=True).encode()
    ).hexdigest()[:16]
    body.metadata.annotations[SPEC_HASH] = digest
    return body


def build_service(spec: ReplicaSpec, *, namespace: str) -> k8s.V1Service:
    """A ClusterIP Service in front of the deployment's ready pods (for in-cluster clients)."""
    selector = _selector(spec.instance, spec.deployment_id)
    return k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k8s.V1ObjectMeta(
            name=resource_name(spec), namespace=namespace, labels={**selector, LABEL_TENANT: str(spec.tenant_id)}
        ),
        spec=k8s.V1ServiceSpec(
            type="ClusterIP",
            selector=selector,
            ports=[k8s.V1ServicePort(name="http", port=PORT, target_port="http", protocol="TCP")],
        ),
    )


def build_secret(spec: ReplicaSpec, *, namespace: str) -> k8s.V1Secret:
    """The Secret holding the replica token that the pods of ``spec`` require and, for a model the
    pods fetch, the fetch's plan and the tenant's credential for it."""
    selector = _selector(spec.instance, spec.deployment_id)
    values = {TOKEN_KEY: spec.token} if spec.token else {}
    if spec.model_fetch is not None:
        values[FETCH_PLAN_KEY] = spec.model_fetch.plan
        values[FETCH_CREDENTIALS_KEY] = spec.model_fetch.credentials or "{}"
    return k8s.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=k8s.V1ObjectMeta(
            name=resource_name(spec), namespace=namespace, labels={**selector, LABEL_TENANT: str(spec.tenant_id)}
        ),
        type="Opaque",
        data={key: base64.b64encode(value.encode()).decode("ascii") for key, value in values.items()},
    )


class KubernetesDriver(Driver):
    kind = "kubernetes"
    group_managed = True

    def __init__(
        self,
        *,
        apps: Any,
        core: Any,
        namespace: str,
        image: str,
        instance: str,
        cuda_image: str = "",
        volume: dict[str, Any] | None = None,
        version_api: Any = None,
        endpoints: str = KubeEndpoints.POD_IP,
    ) -> None:
        self.apps = apps
        self.core = core
        self.namespace = namespace or "default"
        self.image = image
        self.images = RuntimeImages(cpu=image, cuda=cuda_image)  # GPU replicas run the CUDA image
        self.instance = instance
        self.volume = volume or {}
        self.version_api = version_api
        self.endpoints = endpoints

    @classmethod
    def for_target(
        cls, target: Target, *, image: str, instance: str, tenant_id: int | None = None, cuda_image: str = ""
    ) -> KubernetesDriver:
        """The driver for ``target`` with its ``kube_auth``, in ``tenant_id``'s namespace."""
        from workers.drivers import target_credentials

        if target.kube_auth == KubeAuth.IN_CLUSTER:
            api_client = in_cluster_client()
        elif target.kube_auth == KubeAuth.KUBECONFIG:
            content = target_credentials(target).get("kubeconfig", "")
            api_client = kubeconfig_client(content, context=target.kube_context)
        else:
            raise _refuse(Reason.KUBE_AUTH_REQUIRED)
        return cls(
            apps=k8s.AppsV1Api(api_client),
            core=k8s.CoreV1Api(api_client),
            namespace=target_namespace(target, tenant_id),
            image=image,
            cuda_image=cuda_image,
            instance=instance,
            volume=target.model_volume,
            version_api=k8s.VersionApi(api_client),
            endpoints=target.kube_endpoints,
        )

    # ------------------------------------------------------------------ errors

    def _call(self, func: Any, *args: Any, _through: tuple[int, ...] = (404,), **kwargs: Any) -> Any:
        """One API call; errors become driver errors whose messages never quote the answer.

        Answers with a status in ``_through`` (404: absent, and 409 where the caller resolves
        conflicts) stay ``ApiException`` for the caller.
        """
        try:
            return func(*args, **kwargs)
        except ApiException as exc:
            if exc.status in _through:
                raise
            status = exc.status or 0
            said = self._message(exc)
            logger.info("Kubernetes API answered %s in namespace %s: %.300s", status, self.namespace, said)
            if status in (401, 403):
                verb, resource = rbac_words(func)
                what = f": the worker may not {verb} {resource}" if status == 403 else ""
                raise PermanentDriverError(
                    f"Kubernetes refused access in namespace {self.namespace} (HTTP {status}{what}).",
                    reason="Forbidden",
                    cause=Reason.AUTH_FAILED if status == 401 else Reason.ACCESS_DENIED,
                    detail=said,
                ) from None
            if 400 <= status < 500 and status not in (409, 410, 429):
                fields = self._fields(exc)
                raise PermanentDriverError(
                    f"Kubernetes rejected the manifest (HTTP {status}{': ' + fields if fields else ''}).",
                    reason="Invalid",
                    detail=said,
                ) from None
            if status in (409, 410):  # what the caller did not resolve: conflicts, expired versions
                raise TemporaryDriverError(
                    f"Kubernetes API answered HTTP {status} ({'conflict' if status == 409 else 'gone'}); retrying.",
                    reason="Conflict" if status == 409 else "Expired",
                    cause=Reason.SERVER_ERROR,
                    detail=said,
                ) from None
            raise TemporaryDriverError(
                f"Kubernetes API error (HTTP {status}).", cause=Reason.SERVER_ERROR, detail=said
            ) from None
        except Exception as exc:  # urllib3/socket errors: the API server is unreachable
            if isinstance(exc, PermanentDriverError | TemporaryDriverError):
                raise
            cause = classify_network(exc) or (
                Reason.NOT_KUBERNETES if isinstance(exc, ValueError | KeyError | TypeError) else Reason.UNEXPECTED
            )
            logger.info("Kubernetes API in namespace %s: %s: %.300s", self.namespace, cause, exc)
            raise TemporaryDriverError(
                f"Kubernetes API unreachable ({cause}).", reason="ClusterUnreachable", cause=cause
            ) from None

    @staticmethod
    def _fields(exc: ApiException) -> str:
        """The field paths a ``Status`` answer names (structure, not prose), comma-separated."""
        try:
            causes = (json.loads(exc.body or "{}").get("details") or {}).get("causes") or []
        except (ValueError, AttributeError):
            return ""
        paths = [c.get("field") for c in causes if isinstance(c, dict)]
        return ", ".join(sorted({p for p in paths if isinstance(p, str) and _FIELD_PATH.fullmatch(p)})[:5])

    @staticmethod
    def _message(exc: ApiException) -> str:
        try:
            return str(json.loads(exc.body or "{}").get("message") or exc.reason)
        except ValueError:
            return str(exc.reason)

    # ------------------------------------------------------------------ group interface

    def apply(self, spec: ReplicaSpec, replicas: int) -> None:
        if spec.token or spec.model_fetch is not None:  # before the pods that read it
            secret = build_secret(spec, namespace=self.namespace)
            self._upsert(
                secret,
                read=self.core.read_namespaced_secret,
                create=self.core.create_namespaced_secret,
                replace=self.core.replace_namespaced_secret,
                same=lambda current: (current.data or {}) == secret.data,
            )
        body = build_deployment(
            spec, replicas=replicas, namespace=self.namespace, image=self.images.for_replica(spec), volume=self.volume
        )

        def same(current: Any) -> bool:
            annotations = (current.metadata.annotations or {}) if current.metadata else {}
            return annotations.get(SPEC_HASH) == body.metadata.annotations[SPEC_HASH] and bool(
                current.spec and current.spec.replicas == replicas
            )

        self._upsert(
            body,
            read=self.apps.read_namespaced_deployment,
            create=self.apps.create_namespaced_deployment,
            replace=self.apps.replace_namespaced_deployment,
            same=same,
        )
        service = build_service(spec, namespace=self.namespace)
        try:
            self._call(self.core.read_namespaced_service, service.metadata.name, self.namespace)
        except ApiException:
            with contextlib.suppress(ApiException):  # 409: created meanwhile by another worker
                self._call(self.core.create_namespaced_service, self.namespace, service, _through=(409,))

    def _upsert(self, body: Any, *, read: Any, create: Any, replace: Any, same: Callable[[Any], bool]) -> None:
        """Create ``body``, or replace what is there unless ``same``; on a conflict read again once.

        The replace carries the ``resourceVersion`` just read, so a concurrent change (another
        worker, an operator's ``kubectl``) is never overwritten unseen: the API answers 409, and
        the second attempt starts from what is there now. Still in conflict: temporary.
        """
        name, kind = body.metadata.name, body.kind
        for _attempt in range(2):
            try:
                current = self._call(read, name, self.namespace)
            except ApiException:
                current = None
            try:
                if current is None:
                    body.metadata.resource_version = None
                    self._call(create, self.namespace, body, _through=(409,))
                elif not same(current):
                    body.metadata.resource_version = current.metadata.resource_version
                    self._call(replace, name, self.namespace, body, _through=(404, 409))
                return
            except ApiException as exc:  # 409: created or changed since we read; 404: deleted since
                logger.info(
                    "%s %s in namespace %s changed under us (HTTP %s); reading it again",
                    kind,
                    name,
                    self.namespace,
                    exc.status,
                )
        raise TemporaryDriverError(
            f"{kind} {name} kept changing while being updated (HTTP 409); retrying later.",
            reason="Conflict",
            cause=Reason.SERVER_ERROR,
        )

    def teardown(self, deployment_id: int) -> None:
        selector = _label_selector(_selector(self.instance, deployment_id))
        # The Secret first: should this pass die half-way, the Deployment still marks the
        # deployment as present, so orphan collection comes back for the rest.
        for item in self._call(self.core.list_namespaced_secret, self.namespace, label_selector=selector).items:
            with contextlib.suppress(ApiException):
                self._call(self.core.delete_namespaced_secret, item.metadata.name, self.namespace)
        for item in self._call(self.apps.list_namespaced_deployment, self.namespace, label_selector=selector).items:
            with contextlib.suppress(ApiException):
                self._call(
                    self.apps.delete_namespaced_deployment,
                    item.metadata.name,
                    self.namespace,
                    body=k8s.V1DeleteOptions(propagation_policy="Background"),
                )
        for item in self._call(self.core.list_namespaced_service, self.namespace, label_selector=selector).items:
            with contextlib.suppress(ApiException):
                self._call(self.core.delete_namespaced_service, item.metadata.name, self.namespace)

    def known_deployment_ids(self) -> set[int]:
        selector = LABEL_INSTANCE + "=" + self.instance
        items = self._call(self.apps.list_namespaced_deployment, self.namespace, label_selector=selector).items
        return {
            int(i.metadata.labels[LABEL_DEPLOYMENT]) for i in items if LABEL_DEPLOYMENT in (i.metadata.labels or {})
        }

    # ------------------------------------------------------------------ pods

    def _observe(self, pod: Any) -> ObservedReplica:
        labels = pod.metadata.labels or {}
        phase = pod.status.phase if pod.status else "Pending"
        if phase == "Running":
            state = BackendState.RUNNING
        elif phase in ("Succeeded", "Failed"):
            state = BackendState.EXITED
        else:
            state = BackendState.STARTING
        ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        detail = ""
        restarts = 0
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            restarts = max(restarts, cs.restart_count or 0)
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason:
                detail = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
        fetch_trouble = _init_trouble(pod)
        if fetch_trouble:
            detail, restarts = fetch_trouble
        for condition in (pod.status.conditions or []) if pod.status and not detail else []:
            if condition.type == "PodScheduled" and condition.status == "False":  # the scheduler's verdict
                detail = f"{condition.reason or 'Unschedulable'}: {condition.message or ''}".strip(": ")
        ip = pod.status.pod_ip if pod.status else None
        started = pod.status.start_time if pod.status else None
        return ObservedReplica(
            name=pod.metadata.name,
            backend_id=pod.metadata.name,
            deployment_id=int(labels.get(LABEL_DEPLOYMENT, 0)),
            generation=int(labels.get(LABEL_GENERATION, 0)),
            state=state,
            endpoint=f"http://{ip}:{PORT}" if ip else "",
            started_at=started if isinstance(started, datetime) else None,
            detail=detail,
            ready=ready and pod.metadata.deletion_timestamp is None,
            labels=dict(labels),
            restarts=restarts,
        )

    def list(self, deployment_id: int | None = None) -> list[ObservedReplica]:
        labels = {LABEL_INSTANCE: self.instance}
        if deployment_id is not None:
            labels[LABEL_DEPLOYMENT] = str(deployment_id)
        pods = self._call(self.core.list_namespaced_pod, self.namespace, label_selector=_label_selector(labels))
        observed = sorted((self._observe(p) for p in pods.items), key=lambda r: r.name)
        if self.endpoints == KubeEndpoints.SERVICE:
            # One endpoint per deployment, its Service's (kube-proxy balances over the ready
            # pods), carried by the first ready pod; the others count as ready without one.
            selector = _label_selector(labels)
            services = self._call(self.core.list_namespaced_service, self.namespace, label_selector=selector).items
            by_deployment = {
                (s.metadata.labels or {}).get(LABEL_DEPLOYMENT, ""): s.metadata.name for s in services if s.metadata
            }
            carried: set[int] = set()
            for replica in observed:
                service = by_deployment.get(str(replica.deployment_id))
                if replica.ready and service and replica.deployment_id not in carried:
                    replica.endpoint = service_url(service, self.namespace)
                    carried.add(replica.deployment_id)
                else:
                    replica.endpoint = ""
        return observed

    def create(self, spec: ReplicaSpec) -> ObservedReplica:
        raise PermanentDriverError("Kubernetes replicas are created by their Deployment; use apply().")

    def remove(self, backend_id: str) -> None:
        try:
            self._call(self.core.delete_namespaced_pod, backend_id, self.namespace)
        except ApiException:
            return

    def logs(self, backend_id: str, tail: int = 200) -> str:
        try:
            return str(self._call(self.core.read_namespaced_pod_log, backend_id, self.namespace, tail_lines=tail) or "")
        except ApiException:
            return ""

    def backend_events(self, deployment_id: int, since: datetime | None = None) -> BackendEvents:
        """Kubernetes events about this deployment's Deployment, ReplicaSets and pods, newer than ``since``."""
        events = self._call(self.core.list_namespaced_event, self.namespace).items
        prefix = name_prefix(self.instance, deployment_id)
        found = []
        for event in events:
            involved = event.involved_object
            if involved is None or not (involved.name or "").startswith(prefix):
                continue
            when = (
                event.last_timestamp
                or event.event_time
                or (event.metadata.creation_timestamp if event.metadata else None)
            )
            if since is not None and when is not None and when <= since:
                continue
            text = f"{involved.kind} {involved.name}: {event.message or ''}".strip()
            found.append(
                (event.metadata.uid if event.metadata else "", event.type or "Normal", event.reason or "Event", text)
            )
        return found

    def check(self) -> dict[str, Any]:
        try:
            version = self._call(self.version_api.get_code).git_version if self.version_api else ""
            self._call(self.core.list_namespaced_pod, self.namespace, limit=1)
        except (TemporaryDriverError, PermanentDriverError) as exc:
            return report(exc.cause or Reason.UNEXPECTED)
        except ApiException:  # 404 on /version or the pods list: something else answers there
            return report(Reason.NOT_KUBERNETES)
        version = version_text(version)
        try:
            nodes = self._call(self.core.list_node).items
        except (TemporaryDriverError, PermanentDriverError, ApiException):
            # Namespaced credentials often may not list nodes: reachable, GPUs unknown.
            return report(version=version, gpus=0, gpu_inventory_known=False, error="GPU inventory unknown")
        gpus = sum(_count((n.status.allocatable or {}).get(GPU_RESOURCE)) for n in nodes if n.status)
        return report(version=version, gpus=gpus, nodes=len(nodes))


@dataclass
class PodWatch:
    """Follows this installation's pods in one namespace and nudges their deployments on change.

    A fresh list gives the pods and a ``resourceVersion`` to watch from; each event or bookmark
    advances it, so a watch that ends (server timeout, dropped connection) resumes where it
    stopped without a list. ``410 Gone`` (the version was compacted away) means events were
    missed: list again and nudge every deployment whose pods changed or vanished meanwhile. The
    state outlives a connection, so a reconnect through a new driver loses nothing either.
    """

    resource_version: str = ""
    known: dict[str, tuple[int, str]] = field(default_factory=dict)  # pod -> (deployment, resourceVersion)
    lists: int = 0
    listed: bool = False

    def run(
        self,
        driver: KubernetesDriver,
        nudge: Callable[[int], None],
        stop: threading.Event,
        *,
        timeout_s: int = WATCH_TIMEOUT_S,
    ) -> None:
        """Until ``stop`` is set; driver errors (unreachable, refused) are raised to the caller."""
        selector = f"{LABEL_INSTANCE}={driver.instance}"
        while not stop.is_set():
            if not self.resource_version:
                self._relist(driver, selector, nudge)
            watcher = k8s_watch.Watch()
            try:
                stream = watcher.stream(
                    driver.core.list_namespaced_pod,
                    driver.namespace,
                    label_selector=selector,
                    resource_version=self.resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=timeout_s,
                    _request_timeout=(10, timeout_s + 30),
                )
                for event in stream:
                    self._take(event, nudge)
                    if stop.is_set():
                        break
            except ApiException as exc:
                if exc.status != 410:
                    raise
                logger.info("pod watch in namespace %s expired (410 Gone); listing again", driver.namespace)
                self.resource_version = ""
            finally:
                watcher.stop()

    def _relist(self, driver: KubernetesDriver, selector: str, nudge: Callable[[int], None]) -> None:
        pods = driver._call(driver.core.list_namespaced_pod, driver.namespace, label_selector=selector)
        self.lists += 1
        seen = {
            p.metadata.name: (_deployment_of(p.metadata.labels), p.metadata.resource_version or "") for p in pods.items
        }
        changed = {dep for name, (dep, version) in seen.items() if self.known.get(name) != (dep, version)}
        changed |= {dep for name, (dep, _) in self.known.items() if name not in seen}
        if self.listed:  # the first list finds what the periodic resync already covers
            for deployment_id in sorted(changed - {0}):
                nudge(deployment_id)
        self.known, self.listed = seen, True
        self.resource_version = (pods.metadata.resource_version if pods.metadata else "") or ""

    def _take(self, event: dict[str, Any], nudge: Callable[[int], None]) -> None:
        raw = event.get("raw_object") or {}
        metadata = raw.get("metadata") or {}
        self.resource_version = str(metadata.get("resourceVersion") or self.resource_version)
        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK: only the version moves on
        name = str(metadata.get("name") or "")
        deployment_id = _deployment_of(metadata.get("labels"))
        if event["type"] == "DELETED":
            self.known.pop(name, None)
        else:
            self.known[name] = (deployment_id, self.resource_version)
        if deployment_id:
            nudge(deployment_id)


def _init_trouble(pod: Any) -> tuple[str, int] | None:
    """(detail, restarts) of a pod whose model fetch (the init container) fails, with what the
    fetch wrote as its termination message (``workers.runtime.fetch``: reason and message)."""
    for cs in (pod.status.init_container_statuses or []) if pod.status else []:
        waiting = cs.state.waiting if cs.state else None
        ended = (cs.state.terminated if cs.state else None) or (cs.last_state.terminated if cs.last_state else None)
        failed = ended is not None and (ended.exit_code or 0) != 0
        if not failed and not (waiting and waiting.reason and waiting.reason != "PodInitializing"):
            continue
        reason = waiting.reason if waiting and waiting.reason else "Error"
        if not failed or ended is None:  # waiting for its image, say
            return f"{reason}: {waiting.message if waiting else ''}".strip(": "), cs.restart_count or 0
        said = "".join(c for c in str(ended.message or "") if c.isprintable()).strip()[:300]
        return (
            f"{reason}: the model fetch failed (exit code {ended.exit_code}): {said or 'no message'}",
            cs.restart_count or 0,
        )
    return None


def _deployment_of(labels: Any) -> int:
    value = (labels or {}).get(LABEL_DEPLOYMENT, "") if isinstance(labels, dict) else ""
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else 0


def _count(value: Any) -> int:
    """A node's allocatable GPU count (``"4"``), or 0 if it is not a plain number."""
    return number(int(value)) if isinstance(value, str) and value.isascii() and value.isdigit() else number(value)
