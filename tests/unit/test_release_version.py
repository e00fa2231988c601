"""Release tags, their versions and their order; release notes in a CHANGELOG."""

from __future__ import annotations

import pytest

from deploytools.errors import ExitCode, UsageError
from deploytools.steps.release import (
    Version,
    changelog_section,
    check_tag_format,
    check_version_order,
    parse_tag,
    previous_release,
)


@pytest.mark.parametrize(
    "tag",
    ["v1.15", "1.15.2", "v1.15.2; rm -rf /", "v01.15.2", "v1.15.2-", "V1.15.2", "", "--help"],
)
def test_malformed_tags_are_usage_errors(tag: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_tag(tag)
    assert info.value.exit_code == ExitCode.USAGE
    assert "is not a release tag" in info.value.message


def test_versions_order_like_semver() -> None:
    tags = ["v1.15.2", "v1.16.0-rc.2", "v1.15.10", "v1.16.0", "v1.16.0-rc.10", "v1.16.0-beta"]
    ordered = sorted(parse_tag(t) for t in tags)
    assert [v.tag for v in ordered] == [
        "v1.15.2",
        "v1.15.10",
        "v1.16.0-beta",
        "v1.16.0-rc.2",
        "v1.16.0-rc.10",
        "v1.16.0",
    ]


def test_a_pre_release_may_go_to_staging_never_to_production() -> None:
    rc = parse_tag("v1.16.0-rc.1")
    assert check_tag_format(rc, "staging").verdict == "passed"
    refused = check_tag_format(rc, "production")
    assert refused.verdict == "failed"
    assert "never to production" in refused.reason


def test_version_order_and_previous_release() -> None:
    versions = sorted(parse_tag(t) for t in ["v1.15.1", "v1.15.2", "v1.16.0-rc.1"])
    v1152 = Version(1, 15, 2)
    assert check_version_order(versions, v1152, False).verdict == "passed"
    assert check_version_order(versions, Version(1, 15, 1), False).verdict == "failed"
    assert check_version_order(versions, Version(1, 15, 1), True).verdict == "passed"
    assert previous_release(versions, Version(1, 16, 0)) == v1152
    assert previous_release(versions, Version(1, 15, 1)) is None


CHANGELOG = """# Changelog

## [1.15.3] - 2026-02-01

## [1.15.2] - 2026-01-11
### Added
- Role assignment audit.

## 1.15.1
- First release.
"""


def test_changelog_sections() -> None:
    assert "Role assignment audit" in (changelog_section(CHANGELOG, Version(1, 15, 2)) or "")
    assert changelog_section(CHANGELOG, Version(1, 15, 3)) == ""
    assert "First release" in (changelog_section(CHANGELOG, Version(1, 15, 1)) or "")
    assert changelog_section(CHANGELOG, Version(1, 15, 4)) is None
    # 1.15.1 must not match 1.15.10's heading
    assert changelog_section("## 1.15.10\n- x\n", Version(1, 15, 1)) is None


def test_a_pre_release_never_goes_where_deploys_need_approval() -> None:
    rc = parse_tag("v1.16.0-rc.1")
    refused = check_tag_format(rc, "eu-prod", guarded=True)
    assert refused.verdict == "failed"
    assert "never to eu-prod" in refused.reason
    assert check_tag_format(parse_tag("v1.16.0"), "eu-prod", guarded=True).verdict == "passed"
