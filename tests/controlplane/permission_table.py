"""Which permission each API operation needs: the one table the role-matrix tests enforce and
docs/permissions.md is rendered from, so the documentation cannot drift from the code."""

from __future__ import annotations

from controlplane.tenancy.choices import Perm

STAFF = "staff"  # not a tenant role: Django staff users (operators of the installation)
SELF = "self"  # your own objects, whatever your roles
PLATFORM = "platform"  # not a tenant role: platform admins only, whatever their tenant roles

# endpoint -> operation -> Perm (or STAFF / SELF); operations an endpoint lacks answer 405
API_PERMISSIONS: dict[str, dict[str, Perm | str]] = {
    "tenants": {
        "list": Perm.TENANT_VIEW,
        "retrieve": Perm.TENANT_VIEW,
        "update": Perm.TENANT_CHANGE,
        "delete": Perm.TENANT_DELETE,
    },
    "members": {
        "list": Perm.MEMBER_VIEW,
        "retrieve": Perm.MEMBER_VIEW,
        "create": Perm.MEMBER_CHANGE,
        "update": Perm.MEMBER_CHANGE,
        "delete": Perm.MEMBER_CHANGE,
    },
    "models": {
        "list": Perm.MODEL_VIEW,
        "retrieve": Perm.MODEL_VIEW,
        "create": Perm.MODEL_CHANGE,
        "update": Perm.MODEL_CHANGE,
        "delete": Perm.MODEL_CHANGE,
        "set allow_unsafe_weights / trust_remote_code": PLATFORM,
    },
    # S3 / hub credentials of model sources; the secret is write-only.
    "source-credentials": {
        "list": Perm.MODEL_VIEW,
        "retrieve": Perm.MODEL_VIEW,
        "create": Perm.MODEL_CHANGE,
        "delete": Perm.MODEL_CHANGE,
    },
    # Chunked, resumable model uploads into the platform's store; completing one registers the model.
    "uploads": {
        "list": Perm.MODEL_VIEW,
        "retrieve": Perm.MODEL_VIEW,
        "create": Perm.MODEL_CHANGE,
        "delete": Perm.MODEL_CHANGE,
        "chunk": Perm.MODEL_CHANGE,
        "complete": Perm.MODEL_CHANGE,
    },
    # Targets granted to your tenants, read-only: platform admins manage them (platform/targets).
    "targets": {"list": Perm.TARGET_VIEW, "retrieve": Perm.TARGET_VIEW},
    "deployments": {
        "list": Perm.DEPLOYMENT_VIEW,
        "retrieve": Perm.DEPLOYMENT_VIEW,
        "create": Perm.DEPLOYMENT_CHANGE,
        "update": Perm.DEPLOYMENT_CHANGE,
        "delete": Perm.DEPLOYMENT_CHANGE,
        "scale": Perm.DEPLOYMENT_CHANGE,
        "stop": Perm.DEPLOYMENT_CHANGE,
        "start": Perm.DEPLOYMENT_CHANGE,
        "restart": Perm.DEPLOYMENT_CHANGE,
        "revisions": Perm.DEPLOYMENT_VIEW,
        "revision": Perm.DEPLOYMENT_VIEW,
        "revisions_diff": Perm.DEPLOYMENT_VIEW,
        "rollouts": Perm.DEPLOYMENT_VIEW,
        "rollout_policy": Perm.DEPLOYMENT_CHANGE,  # reading it needs only deployment.view
        "rollback": Perm.DEPLOYMENT_CHANGE,
        "rollout_promote": Perm.DEPLOYMENT_CHANGE,
        "rollout_abort": Perm.DEPLOYMENT_CHANGE,
        "faults": PLATFORM,  # and only where HANGAR_FAULT_INJECTION is on
    },
    "replicas": {"list": Perm.DEPLOYMENT_VIEW, "retrieve": Perm.DEPLOYMENT_VIEW, "logs": Perm.DEPLOYMENT_VIEW},
    "events": {"list": Perm.DEPLOYMENT_VIEW, "retrieve": Perm.DEPLOYMENT_VIEW},
    "keys": {
        "list": Perm.APIKEY_VIEW,
        "retrieve": Perm.APIKEY_VIEW,
        "create": Perm.APIKEY_CHANGE,
        "revoke": Perm.APIKEY_CHANGE,
    },
    "usage": {"list": Perm.USAGE_VIEW, "retrieve": Perm.USAGE_VIEW, "totals": Perm.USAGE_VIEW},
    "audit": {"list": Perm.AUDIT_VIEW, "retrieve": Perm.AUDIT_VIEW},
    "tokens": {"list": SELF, "retrieve": SELF, "create": SELF, "revoke": SELF},
    "platform/targets": {
        "list": PLATFORM,
        "retrieve": PLATFORM,
        "create": PLATFORM,
        "update": PLATFORM,
        "delete": PLATFORM,
        "check": PLATFORM,
    },
    "platform/grants": {"list": PLATFORM, "retrieve": PLATFORM, "create": PLATFORM, "delete": PLATFORM},
    "platform/tenants": {
        "list": PLATFORM,
        "retrieve": PLATFORM,
        "create": PLATFORM,
        "update": PLATFORM,
        "deactivate": PLATFORM,
        "activate": PLATFORM,
    },
    "platform/quotas": {"list": PLATFORM, "retrieve": PLATFORM, "update": PLATFORM},
    "platform/users": {
        "list": PLATFORM,
        "retrieve": PLATFORM,
        "create": PLATFORM,
        "deactivate": PLATFORM,
        "activate": PLATFORM,
        "reset_password": PLATFORM,
        "platform_admin": PLATFORM,
    },
}

# What each permission lets a member do, in words (the first column of the role table).
PERM_DESCRIPTIONS: dict[Perm, str] = {
    Perm.TENANT_VIEW: "See the tenant and its limits",
    Perm.TENANT_CHANGE: "Rename the tenant, change its rate limits and token budget",
    Perm.TENANT_DELETE: "Delete the tenant (once it has no deployments)",
    Perm.MEMBER_VIEW: "See who is a member, with which role",
    Perm.MEMBER_CHANGE: "Add and remove members, change roles (never above your own)",
    Perm.MODEL_VIEW: "See catalog models, their metadata and memory estimates",
    Perm.MODEL_CHANGE: "Register, edit and remove catalog models",
    Perm.TARGET_VIEW: "See the targets granted to the tenant: name, kind, health and capacity",
    Perm.DEPLOYMENT_VIEW: "See deployments, replicas, events, live metrics and replica logs",
    Perm.DEPLOYMENT_CHANGE: "Create, edit, scale, stop, start, restart and delete deployments",
    Perm.APIKEY_VIEW: "See API keys (never their secrets)",
    Perm.APIKEY_CHANGE: "Create and revoke API keys",
    Perm.USAGE_VIEW: "See metered usage and per-key totals",
    Perm.AUDIT_VIEW: "Read the audit trail",
}  # fmt: skip

# Dashboard screens and buttons and the permission each must check (the dashboard calls the
# same selectors and services, so it enforces the same table).
DASHBOARD_ACTIONS: list[tuple[str, Perm | str]] = [
    ("Tenant settings page", Perm.TENANT_VIEW),
    ("Save tenant settings", Perm.TENANT_CHANGE),
    ("Delete tenant", Perm.TENANT_DELETE),
    ("Members page", Perm.MEMBER_VIEW),
    ("Invite member, change role, remove member", Perm.MEMBER_CHANGE),
    ("Models page and model detail", Perm.MODEL_VIEW),
    ("Register, edit, remove model", Perm.MODEL_CHANGE),
    ("Targets page: granted targets with health and capacity", Perm.TARGET_VIEW),
    ("Deployments, live metrics, replicas, event timeline, log tail", Perm.DEPLOYMENT_VIEW),
    ("Create, edit, scale, stop, start, restart, delete deployment", Perm.DEPLOYMENT_CHANGE),
    ("API keys page", Perm.APIKEY_VIEW),
    ("Create API key (secret shown once), revoke key", Perm.APIKEY_CHANGE),
    ("Usage page", Perm.USAGE_VIEW),
    ("Audit log page", Perm.AUDIT_VIEW),
    ("Platform section (navigation link and every page)", PLATFORM),
    ("Platform targets: add, edit, upload credentials (write-only), check, delete, grant, revoke", PLATFORM),
    ("Platform tenants: create, deactivate, activate, limits, quotas with usage", PLATFORM),
    ("Platform users: create, deactivate, reset password (shown once), platform admin right", PLATFORM),
]
