"""A node's model cache: models fetched from their sources, by content hash, verified before use."""
