"""[image]: the Dockerfile's path, the target stage, extra build args and build secrets, checked
when deploy.toml is loaded and passed to the build as given; the defaults build as before."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from deploytools.commands.docker_build import buildkit_build
from deploytools.config import ImageConfig, load_config, parse_config
from deploytools.engine.process import ProcessResult
from deploytools.errors import ConfigError, UsageError
from deploytools.steps import image as image_step
from tests.unit.test_config import GOOD

REPO = Path(__file__).resolve().parents[2]
LABELS = {
    "org.opencontainers.image.version": "2.4.0",
    "org.opencontainers.image.revision": "abc",
    "org.opencontainers.image.created": "2026-02-16T10:00:00Z",
    "org.opencontainers.image.source": "https://example.com/notes",
}


def load(text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, Path("deploy.toml"))


def test_defaults_are_the_dockerfile_at_the_root_with_no_extras() -> None:
    assert load(GOOD).image == ImageConfig()
    assert load_config(REPO / "deploy.toml").image == ImageConfig()


def test_the_notes_service_builds_its_runtime_stage_from_docker_dockerfile() -> None:
    image = load_config(REPO / "examples" / "notes-api" / "deploy.toml").image
    assert (image.dockerfile, image.target) == ("docker/Dockerfile", "runtime")
    assert dict(image.build_args) == {"UVICORN_WORKERS": "2"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('dockerfile = "../Dockerfile"', '"image.dockerfile" must be a path relative'),
        ('dockerfile = "/etc/Dockerfile"', '"image.dockerfile" must be a path relative'),
        ('target = "run time"', '"image.target" must be a build stage'),
        ('build_args = { VERSION = "9" }', '"image.build_args.VERSION" is set by deploytools'),
        ('build_args = { "A-B" = "1" }', '"image.build_args" keys are ARG names'),
        ('secrets = { "npm token" = "NPM_TOKEN" }', '"image.secrets" keys are build secret ids'),
        ('secrets = { npm = "NPM TOKEN" }', '"image.secrets.npm" names the environment variable'),
        ('secrets = { npm = "LD_PRELOAD" }', "image.secrets.npm"),
        ('dockerfle = "x"', 'unknown key "image.dockerfle" (did you mean "dockerfile"?)'),
    ],
)
def test_bad_image_settings_are_refused_when_loaded(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(GOOD + f"\n[image]\n{table}\n")
    assert message in caught.value.message


def test_configured_build_args_come_first_and_the_label_args_win() -> None:
    settings = ImageConfig(build_args={"UVICORN_WORKERS": "4"})
    assert image_step.build_args(settings, LABELS) == {
        "UVICORN_WORKERS": "4",
        "VERSION": "2.4.0",
        "REVISION": "abc",
        "CREATED": "2026-02-16T10:00:00Z",
        "SOURCE": "https://example.com/notes",
    }


def test_the_buildkit_argv_names_secrets_by_variable_never_by_value() -> None:
    argv = buildkit_build(
        "/ctx",
        tag="notes:2.4.0",
        dockerfile="docker/Dockerfile",
        target="runtime",
        buildargs={"B": "2", "A": "1"},
        labels={"l": "v"},
        secrets={"npm": "NPM_TOKEN"},
        iidfile="/tmp/iid",
    )
    assert argv == [
        "docker", "build", "--file", "/ctx/docker/Dockerfile", "--tag", "notes:2.4.0",
        "--target", "runtime", "--build-arg", "A=1", "--build-arg", "B=2", "--label", "l=v",
        "--secret", "id=npm,env=NPM_TOKEN", "--iidfile", "/tmp/iid", "--progress", "plain", "/ctx",
    ]  # fmt: skip


def test_an_unset_build_secret_is_a_usage_error_before_anything_is_built() -> None:
    with pytest.raises(UsageError) as caught:
        image_step.build_secret_values({"npm": "NPM_TOKEN", "pip": "PIP_TOKEN"}, {"PIP_TOKEN": "x"})
    assert "NPM_TOKEN" in caught.value.message
    assert "PIP_TOKEN" not in caught.value.message
    assert caught.value.untouched == "nothing was built"


def test_a_build_with_secrets_runs_buildkit_with_the_value_in_its_environment_only(
    tmp_path: Path,
) -> None:
    context = tmp_path / "src"
    context.mkdir()
    calls: list[tuple[Sequence[str], Mapping[str, str]]] = []

    def runner(
        argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
    ) -> ProcessResult:
        calls.append((argv, env))
        Path(argv[argv.index("--iidfile") + 1]).write_text("sha256:feed\n")
        return ProcessResult(tuple(argv), 0, "", "")

    image_id = image_step._run_buildkit(
        context,
        reference="notes:2.4.0",
        labels=LABELS,
        secret_values={"NPM_TOKEN": "s3cr3t-value-0123456789"},
        docker_host="ssh://deploy@build.example.com",
        timeout_s=60,
        settings=ImageConfig(secrets={"npm": "NPM_TOKEN"}),
        process_runner=runner,
    )
    assert image_id == "sha256:feed"
    ((argv, env),) = calls
    assert "s3cr3t-value-0123456789" not in " ".join(argv)
    assert env["NPM_TOKEN"] == "s3cr3t-value-0123456789"
    assert env["DOCKER_BUILDKIT"] == "1"
    assert env["DOCKER_HOST"] == "ssh://deploy@build.example.com"


def test_a_failed_buildkit_build_says_what_failed(tmp_path: Path) -> None:
    def runner(
        argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: str | None = None
    ) -> ProcessResult:
        return ProcessResult(
            tuple(argv),
            1,
            "",
            "ERROR: BuildKit is enabled but the buildx component is missing or broken.",
        )

    with pytest.raises(Exception) as caught:
        image_step._run_buildkit(
            tmp_path,
            reference="notes:2.4.0",
            labels=LABELS,
            secret_values={},
            docker_host="",
            timeout_s=60,
            settings=ImageConfig(secrets={"npm": "NPM_TOKEN"}),
            process_runner=runner,
        )
    assert "buildx component is missing" in str(caught.value)
    assert "no release image was tagged" in str(caught.value.untouched)  # type: ignore[attr-defined]


def test_config_check_shows_a_build_secret_by_its_variable_never_its_value() -> None:
    from deploytools.config import resolved_view

    config = load(GOOD + '\n[image]\nsecrets = { npm = "NPM_TOKEN" }\n')
    view = resolved_view(config, {"NPM_TOKEN": "npm-secret-value-0123456789"})
    assert view["image"]["secrets"] == {"npm": "NPM_TOKEN (set, hidden)"}
    assert "npm-secret-value" not in repr(view)
