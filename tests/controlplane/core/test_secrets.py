"""Bearer secret format: checksum catches typos before any database access; digests are peppered."""

from __future__ import annotations

import pytest
from django.test import override_settings

from controlplane.core import secrets


def test_issue_and_parse_round_trip() -> None:
    issued = secrets.issue("hgr")
    parsed = secrets.parse(issued.token, "hgr")
    assert parsed is not None
    assert (parsed.key_id, parsed.secret) == (issued.key_id, issued.secret)
    assert issued.token.startswith(f"hgr_{issued.key_id}_")
    assert issued.secret not in issued.display_prefix


def test_every_single_character_typo_is_rejected() -> None:
    token = secrets.issue("hgr").token
    for i in range(len(token)):
        for replacement in ("a", "Z", "0"):
            if token[i] == replacement:
                continue
            typo = token[:i] + replacement + token[i + 1 :]
            assert secrets.parse(typo, "hgr") is None, typo


@pytest.mark.parametrize("garbage", ["", "hgr_", "Bearer x", "hgr_" + "a" * 200, "hgp_" + "a" * 51, "hgr_é" * 10])
def test_garbage_is_rejected(garbage: str) -> None:
    assert secrets.parse(garbage, "hgr") is None


def test_prefix_must_match() -> None:
    token = secrets.issue("hgp").token
    assert secrets.parse(token, "hgr") is None


def test_digest_depends_on_pepper() -> None:
    with override_settings(HANGAR_KEY_PEPPER="pepper-one"):
        one = secrets.digest("s3cret")
        assert secrets.digest_matches("s3cret", one)
        assert not secrets.digest_matches("s3creT", one)
    with override_settings(HANGAR_KEY_PEPPER="pepper-two"):
        assert not secrets.digest_matches("s3cret", one)
