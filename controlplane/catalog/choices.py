from django.db import models


class ModelFormat(models.TextChoices):
    SAFETENSORS = "safetensors", "safetensors"
    PYTORCH = "pytorch", "PyTorch pickle (unsafe)"


class DType(models.TextChoices):
    FLOAT32 = "float32", "float32"
    FLOAT16 = "float16", "float16"
    BFLOAT16 = "bfloat16", "bfloat16"


class Quantization(models.TextChoices):
    NONE = "none", "none"
    INT8 = "int8", "int8 (dynamic)"


DTYPE_BYTES = {DType.FLOAT32: 4, DType.FLOAT16: 2, DType.BFLOAT16: 2}


class CredentialKind(models.TextChoices):
    S3 = "s3", "S3 (AWS, MinIO, Ceph)"
    HF = "hf", "Hugging Face hub or mirror"


class ModelTask(models.TextChoices):
    """What a model serves: completions (``generate``) or ``/v1/embeddings`` (``embed``)."""

    GENERATE = "generate", "generate (chat, completions)"
    EMBED = "embed", "embed (embeddings)"


class Pooling(models.TextChoices):
    """How an embedding model turns token states into one vector (``workers.runtime.embeddings``)."""

    NONE = "", "-"
    MEAN = "mean", "mean of the tokens"
    LAST = "last", "last token"
    CLS = "cls", "first token"


class UploadStatus(models.TextChoices):
    OPEN = "open", "receiving chunks"
    COMPLETE = "complete", "verified and registered"
