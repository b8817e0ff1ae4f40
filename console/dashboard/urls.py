"""Dashboard routes (server-rendered pages)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from console.dashboard import logins
from console.dashboard.views import (
    access,
    account,
    catalog,
    deployments,
    home,
    platform,
    platform_audit,
    platform_targets,
    playground,
)

app_name = "dashboard"
urlpatterns = [
    path("login/", logins.HangarLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", home.overview, name="overview"),
    path("tenant/", home.switch_tenant, name="switch-tenant"),
    path("models/", catalog.model_index, name="models"),
    path("models/upload/", catalog.model_upload, name="model-upload"),
    path("models/<int:pk>/", catalog.model_detail, name="model-detail"),
    path("models/<int:pk>/delete/", catalog.model_delete, name="model-delete"),
    path("targets/", catalog.target_index, name="targets"),
    path("targets/<int:pk>/", catalog.target_detail, name="target-detail"),
    path("deployments/new/", deployments.deployment_new, name="deployment-new"),
    path("deployments/<int:pk>/", deployments.deployment_detail, name="deployment-detail"),
    path("deployments/<int:pk>/spec/", deployments.deployment_spec, name="deployment-spec"),
    path("deployments/<int:pk>/scale/", deployments.deployment_scale, name="deployment-scale"),
    path("deployments/<int:pk>/start/", deployments.deployment_action, {"action": "start"}, name="deployment-start"),
    path("deployments/<int:pk>/stop/", deployments.deployment_action, {"action": "stop"}, name="deployment-stop"),
    path(
        "deployments/<int:pk>/restart/", deployments.deployment_action, {"action": "restart"}, name="deployment-restart"
    ),
    path("deployments/<int:pk>/delete/", deployments.deployment_delete, name="deployment-delete"),
    path("deployments/<int:pk>/logs/", deployments.deployment_logs, name="deployment-logs"),
    path("deployments/<int:pk>/rollout/", deployments.deployment_rollout, name="deployment-rollout"),
    path("deployments/<int:pk>/rollback/", deployments.deployment_rollback, name="deployment-rollback"),
    path(
        "deployments/<int:pk>/canary/promote/",
        deployments.deployment_canary,
        {"action": "promote"},
        name="deployment-canary-promote",
    ),
    path(
        "deployments/<int:pk>/canary/abort/",
        deployments.deployment_canary,
        {"action": "abort"},
        name="deployment-canary-abort",
    ),
    path("keys/", access.key_index, name="keys"),
    path("keys/<int:pk>/revoke/", access.key_revoke, name="key-revoke"),
    path("usage/", access.usage, name="usage"),
    path("usage.csv", access.usage_csv, name="usage-csv"),
    path("members/", access.member_index, name="members"),
    path("members/<int:pk>/role/", access.member_role, name="member-role"),
    path("members/<int:pk>/remove/", access.member_remove, name="member-remove"),
    path("audit/", access.audit, name="audit"),
    path("tokens/", account.token_index, name="tokens"),
    path("tokens/<int:pk>/revoke/", account.token_revoke, name="token-revoke"),
    path("account/security/", account.security, name="security"),
    path("playground/", playground.playground, name="playground"),
    path("playground/key/", playground.playground_key, name="playground-key"),
    # Platform section: platform admins only (404 for everyone else)
    path("platform/", platform.platform_home, name="platform"),
    path("platform/targets/", platform_targets.target_index, name="platform-targets"),
    path("platform/targets/<int:pk>/", platform_targets.target_detail, name="platform-target"),
    path("platform/targets/<int:pk>/check/", platform_targets.target_check, name="platform-target-check"),
    path("platform/targets/<int:pk>/delete/", platform_targets.target_delete, name="platform-target-delete"),
    path("platform/targets/<int:pk>/grants/", platform_targets.target_grant, name="platform-target-grant"),
    path(
        "platform/targets/<int:pk>/grants/<int:grant_pk>/revoke/",
        platform_targets.target_revoke,
        name="platform-target-revoke",
    ),
    path("platform/tenants/", platform.tenant_index, name="platform-tenants"),
    path("platform/tenants/<int:pk>/", platform.tenant_detail, name="platform-tenant"),
    path("platform/tenants/<int:pk>/quotas/", platform.tenant_quota, name="platform-tenant-quota"),
    path(
        "platform/tenants/<int:pk>/deactivate/",
        platform.tenant_active,
        {"active": False},
        name="platform-tenant-deactivate",
    ),
    path(
        "platform/tenants/<int:pk>/activate/", platform.tenant_active, {"active": True}, name="platform-tenant-activate"
    ),
    path("platform/users/", platform.user_index, name="platform-users"),
    path("platform/audit/", platform_audit.audit, name="platform-audit"),
    *[
        path(
            f"platform/users/<int:pk>/{action}/",
            platform.user_action,
            {"action": action},
            name=f"platform-user-{action}",
        )
        for action in platform.USER_ACTIONS
    ],
]
