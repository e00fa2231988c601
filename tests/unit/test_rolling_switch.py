"""The parts of the rolling strategy and the proxy switch that need no engine."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploytools import proxy
from deploytools.commands import compose
from deploytools.errors import CheckFailed, DeadlineExceeded, UsageError
from deploytools.steps import deploy as deploy_step
from deploytools.steps import deploy_rolling
from deploytools.steps.migrate import ImageInfo

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_compose_files_initial_proxy_config_is_the_rendered_one_for_the_service() -> None:
    stack = yaml.safe_load((REPO_ROOT / "docker-compose.prod.yml").read_text())
    initial = stack["services"]["proxy"]["environment"]["DEPLOYTOOLS_PROXY_CONF"]
    # Compose turns `$$` into `$`.
    assert initial.replace("$$", "$") == proxy.render("app")
    assert "ports" not in stack["services"]["app"]
    assert stack["services"]["proxy"]["ports"] == ["${APP_PORT:-8080}:80"]


def test_render_names_one_upstream_resolved_at_request_time() -> None:
    text = proxy.render("rbac-production_app_2", app_port=9000)
    assert 'set $app_upstream "rbac-production_app_2";' in text
    assert "proxy_pass http://$app_upstream:9000;" in text
    assert "resolver 127.0.0.11 valid=1s" in text
    assert text.count("{") == text.count("}")


@pytest.mark.parametrize("bad", ["", "app; evil", 'a"b', "a b", "$host", "a}"])
def test_render_refuses_what_is_not_a_host_name(bad: str) -> None:
    with pytest.raises(ValueError):
        proxy.render(bad)


def test_config_archive_holds_the_one_file() -> None:
    with tarfile.open(fileobj=io.BytesIO(proxy.config_archive("x y\n")), mode="r") as tar:
        (member,) = tar.getmembers()
        assert member.name == "default.conf" and member.mode == 0o644
        assert tar.extractfile(member).read() == b"x y\n"  # type: ignore[union-attr]


def test_worker_pids_counts_workers_old_and_new_not_the_master() -> None:
    listing = (
        "1 nginx: master process nginx -g daemon off; \n"
        "29 nginx: worker process \n"
        "30 nginx: worker process is shutting down \n"
        "31 sh -c for d in ...\n"
        "self \n"
    )
    assert proxy.worker_pids(listing) == {29, 30}


class FakeProxy:
    """An nginx container whose workers are replaced `after` listings past the reload."""

    name = "dtroll-proxy"

    def __init__(self, after: int | None) -> None:
        self.after, self.reloaded, self.listings, self.files = after, False, 0, []

    def put_archive(self, path: str, data: bytes) -> bool:
        self.files.append((path, data))
        return True

    def exec_run(self, argv: list[str]) -> tuple[int, bytes]:
        if argv[:3] == ["nginx", "-s", "reload"]:
            self.reloaded = True
        if argv[0] == "sh":
            self.listings += 1
            replaced = self.reloaded and self.after is not None and self.listings > self.after
            return 0, b"7 nginx: worker process \n" if replaced else b"5 nginx: worker process \n"
        return 0, b""


def test_switch_writes_tests_reloads_and_waits_for_the_old_workers() -> None:
    fake = FakeProxy(after=3)
    proxy.switch(fake, "app_2", sleep=lambda s: None)
    assert fake.reloaded and fake.listings == 4
    ((path, data),) = fake.files
    assert path == "/etc/nginx/conf.d"
    assert b'"app_2"' in data


def test_switch_has_a_deadline() -> None:
    ticks = iter(range(1000))
    with pytest.raises(DeadlineExceeded, match="old workers did not finish"):
        proxy.switch(
            FakeProxy(after=None),
            "app_2",
            timeout_s=5,
            clock=lambda: next(ticks),
            sleep=lambda s: None,
        )


def info(expand_only: bool | None) -> ImageInfo:
    return ImageInfo(ref="rbac:2", id="sha256:x", version="2", expand_only=expand_only)


def test_rolling_is_refused_unless_the_release_is_expand_only() -> None:
    assert deploy_rolling.refusal(info(True), "production") is None
    for value, why in [(False, "not expand-only"), (None, "does not declare")]:
        refused = deploy_rolling.refusal(info(value), "production")
        assert isinstance(refused, UsageError)
        assert why in refused.message and "refused" in refused.message
        assert refused.untouched == "nothing was done"
        assert "recreate" in (refused.hint or "") and "maintenance window" in (refused.hint or "")


def test_rolling_is_a_registered_strategy() -> None:
    strategy: Any = deploy_step.STRATEGIES["rolling"]()
    assert strategy.name == "rolling"
    assert isinstance(strategy, deploy_rolling.RollingStrategy)


def test_up_beside_the_running_containers() -> None:
    cli = compose.ComposeCli(prefix=("docker-compose",), version="1.29.2")
    argv = compose.up(
        cli, "p", ["f.yml"], ["app"], no_deps=True, no_recreate=True, scale={"app": 2}
    )
    assert argv[argv.index("up") :] == [
        "up",
        "--detach",
        "--no-deps",
        "--no-recreate",
        "--scale",
        "app=2",
        "app",
    ]


class FakeApp:
    """The new app container: records what ran in it, answers with `code`."""

    name = "dtroll_app_2"

    def __init__(self, code: int) -> None:
        self.code, self.argv = code, []

    def exec_run(self, argv: list[str]) -> tuple[int, bytes]:
        self.argv = argv
        return self.code, b"AssertionError" if self.code else b""


def test_warm_sends_concurrent_health_requests_inside_the_new_container() -> None:
    app = FakeApp(0)
    deploy_rolling.warm(app)
    program = app.argv[2]
    compile(program, "warm", "exec")
    assert app.argv[:2] == ["python3", "-c"]
    assert "http://127.0.0.1:8080/health" in program
    assert f"ThreadPoolExecutor({deploy_rolling.WARM_CONCURRENCY})" in program


def test_a_failed_warm_up_fails_the_release_before_the_switch() -> None:
    with pytest.raises(CheckFailed, match="warming dtroll_app_2 up failed"):
        deploy_rolling.warm(FakeApp(1))
