"""Settings modules: ``base`` holds everything; ``local``, ``test`` and ``production`` adjust it."""
