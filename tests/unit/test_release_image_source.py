"""The image's OCI source label never carries a credential from a remote's URL."""

from __future__ import annotations

import pytest

from deploytools.steps.image import BuiltImage, _public_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://x-access-token:ghs_secret@github.com/example/rbac-api.git",
            "https://github.com/example/rbac-api.git",
        ),
        ("https://github.com/example/rbac-api", "https://github.com/example/rbac-api"),
        ("git@github.com:example/rbac-api.git", "git@github.com:example/rbac-api.git"),
        ("/srv/git/rbac-api.git", "/srv/git/rbac-api.git"),
    ],
)
def test_public_url(url: str, shown: str) -> None:
    assert _public_url(url) == shown


def _image(digest: str | None) -> BuiltImage:
    return BuiltImage(
        reference="ghcr.io/example/rbac-api:1.15.2",
        image_id="sha256:" + "a" * 64,
        repository_digest=digest,
        version="1.15.2",
        revision="0" * 40,
        labels={},
        pushed=digest is not None,
    )


def test_pinned_reference_uses_the_registry_digest_once_pushed() -> None:
    assert _image(None).pinned == "ghcr.io/example/rbac-api:1.15.2@sha256:" + "a" * 64
    pushed = _image("ghcr.io/example/rbac-api@sha256:" + "b" * 64)
    assert pushed.pinned == "ghcr.io/example/rbac-api:1.15.2@sha256:" + "b" * 64
