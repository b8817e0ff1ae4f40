"""docs/permissions.md is rendered from ROLE_PERMISSIONS and API_PERMISSIONS; this test fails
when the file and the code disagree. Regenerate with:

    HANGAR_WRITE_DOCS=1 .venv/bin/pytest tests/controlplane/core/test_api_permissions_doc.py
"""

from __future__ import annotations

import os

from console.api_urls import router
from controlplane.tenancy.choices import ROLE_PERMISSIONS, Perm, Role
from tests.conftest import REPO_ROOT
from tests.controlplane.permission_table import (
    API_PERMISSIONS,
    DASHBOARD_ACTIONS,
    PERM_DESCRIPTIONS,
    PLATFORM,
    SELF,
    STAFF,
)

DOC = REPO_ROOT / "docs" / "permissions.md"
ROLES = [Role.OWNER, Role.ADMIN, Role.OPERATOR, Role.VIEWER]
YES, NO = "✓", "—"

OPERATION_ROUTES = {
    "list": "GET /api/v1/{e}/",
    "retrieve": "GET /api/v1/{e}/{id}/",
    "create": "POST /api/v1/{e}/",
    "update": "PATCH /api/v1/{e}/{id}/",
    "delete": "DELETE /api/v1/{e}/{id}/",
    "totals": "GET /api/v1/{e}/totals/",
    "logs": "GET /api/v1/{e}/{id}/logs/",
    "set allow_unsafe_weights / trust_remote_code": "POST or PATCH /api/v1/{e}/ with either flag true",
}


def _cells(perm: Perm | str) -> str:
    if perm == STAFF:
        return " | ".join(["staff users only"] + [""] * (len(ROLES) - 1))
    if perm == SELF:
        return " | ".join(["anyone signed in, for their own"] + [""] * (len(ROLES) - 1))
    if perm == PLATFORM:
        return " | ".join(["platform admins only"] + [""] * (len(ROLES) - 1))
    return " | ".join(YES if perm in ROLE_PERMISSIONS[role] else NO for role in ROLES)


def render() -> str:
    head = " | ".join(role.label for role in ROLES)
    rule = "|".join(["---"] * (len(ROLES) + 2))
    lines = [
        "# Permissions",
        "",
        "<!-- Generated from controlplane/tenancy/choices.py (ROLE_PERMISSIONS) and",
        "     tests/controlplane/permission_table.py by tests/controlplane/core/test_api_permissions_doc.py.",
        "     Do not edit by hand: HANGAR_WRITE_DOCS=1 .venv/bin/pytest tests/controlplane/core/test_api_permissions_doc.py -->",
        "",
        "Every member of a tenant holds one role there. The REST API and the dashboard check the same",
        "permissions, through the same selectors and services, so what a role may do is the same",
        "everywhere. The role tests (`tests/controlplane/**/test_api*.py`) check every row of the API",
        "table below for every role.",
        "",
        "- An object of a tenant you are not a member of does not exist for you: **404**, in lists too,",
        "  whatever filter you pass. A reference to one in a request body (a model or target id, a",
        "  tenant slug) is a **400** on that field, worded the same as for an id that does not exist.",
        "- A member whose role lacks the permission gets **403** for writes to objects they can see,",
        "  and **404** for objects the role cannot see at all (the audit trail for operators and viewers).",
        "  Listing a resource that none of your roles may see is a **403**.",
        "- Nobody grants or changes a role above their own; a tenant always keeps at least one owner.",
        "- Tenants, users, targets and quotas belong to the platform: platform admins (staff users with",
        "  the `tenancy.administer_platform` permission, or superusers) manage them under",
        "  `/api/v1/platform/` and in the dashboard's Platform section. Those endpoints and pages do not",
        "  exist for anyone else (**404**), whatever their roles.",
        "- Personal access tokens belong to a user, not a tenant; they carry that user's roles, narrowed",
        "  by their scopes: `read` (safe methods), `write` (includes read: every other operation) and",
        "  `admin` (includes write: members, API key creation, tenant settings, the platform API). Each",
        "  operation's scope is `x-token-scope` in the OpenAPI document; a token without it gets **403**",
        "  `insufficient_scope`. Tokens expire (`HANGAR_TOKEN_DEFAULT_DAYS`, at most",
        "  `HANGAR_TOKEN_MAX_DAYS`) and record when and from where they were last used. A token cannot",
        "  create further tokens: create them from a signed-in session (or the dashboard's Tokens page),",
        "  so revoking a leaked token is always enough; revoking can also revoke the API keys it created.",
        "",
        "## Roles",
        "",
        f"| Permission | What it allows | {head} |",
        f"|{rule}|",
    ]
    for perm in Perm:
        lines.append(f"| `{perm.value}` | {PERM_DESCRIPTIONS[perm]} | {_cells(perm)} |")
    lines += ["", "## REST API", "", f"| Endpoint | Operation | Permission | {head} |", f"|{rule}|---|"]
    for endpoint, operations in API_PERMISSIONS.items():
        for operation, perm in operations.items():
            route = OPERATION_ROUTES.get(operation, "POST /api/v1/{e}/{id}/" + operation.replace("_", "-") + "/")
            route = route.replace("{e}", endpoint).replace("{id}", "{slug}" if endpoint == "tenants" else "{id}")
            shown = f"`{perm.value}`" if isinstance(perm, Perm) else perm
            lines.append(f"| {endpoint} | `{route}` | {shown} | {_cells(perm)} |")
    lines += [
        "",
        "Operations not listed answer 405 (for example, API keys are revoked, never edited or deleted;",
        "replicas, events, usage and the audit trail are read-only; updates are PATCH, never PUT).",
        "",
        "## Dashboard",
        "",
        f"| Screen or action | Permission | {head} |",
        f"|{'|'.join(['---'] * (len(ROLES) + 2))}|",
    ]
    for label, perm in DASHBOARD_ACTIONS:
        shown = f"`{perm.value}`" if isinstance(perm, Perm) else perm
        lines.append(f"| {label} | {shown} | {_cells(perm)} |")
    return "\n".join(lines) + "\n"


def test_permissions_doc_is_current() -> None:
    text = render()
    if os.environ.get("HANGAR_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/permissions.md is stale; regenerate it (see this module's docstring)"


def test_every_permission_is_described_and_used() -> None:
    assert set(PERM_DESCRIPTIONS) == set(Perm)
    used = {perm for ops in API_PERMISSIONS.values() for perm in ops.values()}
    assert set(Perm) <= used


def test_every_routed_endpoint_is_in_the_table() -> None:
    assert {prefix for prefix, _, _ in router.registry} == set(API_PERMISSIONS)


def test_every_extra_action_is_in_the_table() -> None:
    for prefix, viewset, _ in router.registry:
        for extra in viewset.get_extra_actions():
            assert extra.__name__ in API_PERMISSIONS[prefix], (prefix, extra.__name__)
