"""The names a model is served under: a catalog model's name is its deployments' default served name."""

from __future__ import annotations

import re

SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
