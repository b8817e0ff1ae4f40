"""Single-machine quickstart: SQLite, a project-started Redis, the local driver."""

from console.settings.base import *  # noqa: F403
from console.settings.base import env

DEBUG = env.bool("HANGAR_DEBUG", True)
