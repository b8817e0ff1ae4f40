"""A model source as the API judges it: the shape rules of ``workers.runtime.store.uris``, a
refusal as a ``ValidationFailed`` on the ``source`` field."""

from __future__ import annotations

from controlplane.core.exceptions import ValidationFailed
from workers.runtime.store.uris import BadSource, SourceURI, parse_uri


def parse_source(source: str) -> SourceURI:
    """The ``SourceURI`` of ``source``, or a ``ValidationFailed`` on the ``source`` field."""
    try:
        return parse_uri(source)
    except BadSource as exc:
        raise ValidationFailed("Bad model source.", field_errors={"source": [str(exc)]}) from None
