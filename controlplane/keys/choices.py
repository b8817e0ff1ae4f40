from django.db import models


class Scope(models.TextChoices):
    INFERENCE = "inference", "Inference (completions, chat)"
    MODELS_READ = "models:read", "List models"


DEFAULT_SCOPES = [Scope.INFERENCE.value, Scope.MODELS_READ.value]
KEY_PREFIX = "hgr"
