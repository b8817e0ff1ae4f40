"""Single-machine quickstart: SQLite, a project-started Redis, the local driver."""

from console.logging import FORMATS, logging_config
from console.settings.base import *  # noqa: F403
from console.settings.base import DATA_DIR, HANGAR_MODEL_ROOTS, LOG_LEVEL
from console.settings.env import Env

env = Env(declare=True, profile="local")

DEBUG = env.bool("HANGAR_DEBUG", True)
# Model sources always have roots to live under (production requires them set explicitly).
HANGAR_MODEL_ROOTS = HANGAR_MODEL_ROOTS or [str(DATA_DIR / "models")]
# People read these logs in a terminal: plain lines unless HANGAR_LOG_FORMAT=json.
HANGAR_LOG_FORMAT = env.choice("HANGAR_LOG_FORMAT", "plain", FORMATS)
LOGGING = logging_config(HANGAR_LOG_FORMAT, LOG_LEVEL)
