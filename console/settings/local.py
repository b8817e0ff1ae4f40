"""Single-machine quickstart: SQLite, a project-started Redis, the local driver."""

from console.settings.base import *  # noqa: F403
from console.settings.base import DATA_DIR, HANGAR_MODEL_ROOTS, env

DEBUG = env.bool("HANGAR_DEBUG", True)
# Model sources always have roots to live under (production requires them set explicitly).
HANGAR_MODEL_ROOTS = HANGAR_MODEL_ROOTS or [str(DATA_DIR / "models")]
