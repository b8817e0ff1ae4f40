"""Which permission each API operation needs: the one table the role-matrix tests enforce and
docs/permissions.md is rendered from, so the documentation cannot drift from the code."""

from __future__ import annotations

from controlplane.tenancy.choices import Perm

STAFF = "staff"  # not a tenant role: Django staff users (operators of the installation)
SELF = "self"  # your own objects, whatever your roles

# endpoint -> operation -> Perm (or STAFF / SELF); operations an endpoint lacks answer 405
API_PERMISSIONS: dict[str, dict[str, Perm | str]] = {
    "tenants": {
        "list": Perm.TENANT_VIEW,
        "retrieve": Perm.TENANT_VIEW,
        "create": STAFF,
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
        "set allow_unsafe_weights / trust_remote_code": Perm.TENANT_CHANGE,
    },
    "targets": {
        "list": Perm.TARGET_VIEW,
        "retrieve": Perm.TARGET_VIEW,
        "create": Perm.TARGET_CHANGE,
        "update": Perm.TARGET_CHANGE,
        "delete": Perm.TARGET_CHANGE,
        "check": Perm.TARGET_CHANGE,
    },
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
}
