"""REST API routes under /api/v1/: top-level resources, each scoped to the caller's tenants."""

from rest_framework.routers import DefaultRouter

from controlplane.audit.api.views import AuditLogViewSet
from controlplane.catalog.api.uploads import UploadViewSet
from controlplane.catalog.api.views import ModelViewSet, SourceCredentialViewSet
from controlplane.deployments.api.platform import PlatformGrantViewSet, PlatformTargetViewSet
from controlplane.deployments.api.quotas import PlatformQuotaViewSet
from controlplane.deployments.api.views import DeploymentViewSet, EventViewSet, ReplicaViewSet, TargetViewSet
from controlplane.keys.api.views import ApiKeyViewSet
from controlplane.tenancy.api.platform import PlatformTenantViewSet, PlatformUserViewSet
from controlplane.tenancy.api.views import AccessTokenViewSet, MembershipViewSet, TenantViewSet
from controlplane.usage.api.views import UsageViewSet

router = DefaultRouter()
router.register("tenants", TenantViewSet, basename="tenant")
router.register("members", MembershipViewSet, basename="member")
router.register("models", ModelViewSet, basename="model")
router.register("source-credentials", SourceCredentialViewSet, basename="source-credential")
router.register("uploads", UploadViewSet, basename="upload")
router.register("targets", TargetViewSet, basename="target")
router.register("deployments", DeploymentViewSet, basename="deployment")
router.register("replicas", ReplicaViewSet, basename="replica")
router.register("events", EventViewSet, basename="event")
router.register("keys", ApiKeyViewSet, basename="apikey")
router.register("usage", UsageViewSet, basename="usage")
router.register("audit", AuditLogViewSet, basename="audit")
router.register("tokens", AccessTokenViewSet, basename="token")
router.register("platform/tenants", PlatformTenantViewSet, basename="platform-tenant")
router.register("platform/users", PlatformUserViewSet, basename="platform-user")
router.register("platform/quotas", PlatformQuotaViewSet, basename="platform-quota")
router.register("platform/targets", PlatformTargetViewSet, basename="platform-target")
router.register("platform/grants", PlatformGrantViewSet, basename="platform-grant")
urlpatterns = router.urls
