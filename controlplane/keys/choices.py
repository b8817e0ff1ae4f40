from django.db import models


class Scope(models.TextChoices):
    INFERENCE = "inference", "Inference (completions, chat)"
    MODELS_READ = "models:read", "List models"
    EMBEDDINGS = "embeddings", "Embeddings"


DEFAULT_SCOPES = [Scope.INFERENCE.value, Scope.MODELS_READ.value, Scope.EMBEDDINGS.value]
KEY_PREFIX = "hgr"
