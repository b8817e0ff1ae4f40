"""The name of this installation, shared by every process that talks to the same database."""

from __future__ import annotations

import re

from django.conf import settings
from django.db import connection


def instance_name() -> str:
    """Label value that keeps two installations (or the test suite and a dev setup) apart.

    ``HANGAR_INSTANCE`` when set, else the database name: resources of another database's
    deployments are never mistaken for this installation's orphans, and replica credentials
    (``controlplane.deployments.replica_auth``) of one installation are worthless in another.
    """
    name = settings.HANGAR_INSTANCE or str(connection.settings_dict["NAME"]).rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63] or "hangar"
