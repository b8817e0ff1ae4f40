"""The model store's data plane, without Django: what a node runs to fetch a model.

``uris`` judges a source's shape (``file://``, ``s3://``, ``hf://``), ``resolvers`` lists and reads
a source (boto3, ``huggingface_hub``), ``manifest`` holds the content hash and the manifest's
rules, ``cache`` keeps verified models by content hash. The fetch command
(``python -m workers.runtime.fetch``) runs them in the runtime image: in a short-lived container
on a remote Docker host, in an init container on Kubernetes. The worker and the control plane
import the same modules (``pyproject.toml`` allows the control plane this one package of
``workers``: it imports nothing of ours, so it can neither pull Django into the image nor the
worker's machinery into the control plane).
"""
