"""The parts of the rolling strategy and the proxy switch that need no engine."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from deploytools import proxy
from deploytools.commands import compose
from deploytools.errors import CheckFailed, DeadlineExceeded, ExternalCommandFailed, UsageError
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


def test_a_switch_is_prepared_by_one_exec_carrying_the_rendered_config() -> None:
    assert proxy.prepare_argv("app_2") == [
        "sh",
        "-c",
        proxy.PREPARE_SCRIPT,
        "sh",
        proxy.CONFIG_PATH,
        proxy.render("app_2"),
    ]
    wait = proxy.wait_argv(("5", "6"), timeout_s=7.5)
    assert wait == ["sh", "-c", proxy.WAIT_SCRIPT, "sh", "8", "5", "6"]


def fake_nginx(
    tmp_path: Path,
    *,
    config_ok: bool = True,
    old_exit_after_s: float | None = 0.3,
    pid1: str = "nginx: master process nginx",
) -> dict[str, str]:
    """A /proc with PID 1 (`pid1`, the nginx master by default) and two workers, and an `nginx`
    whose reload (also `fake-reload`, what a SIGHUP to the master does) starts a new worker and
    lets the old ones exit after `old_exit_after_s` (never: None); the env for the scripts."""
    proc, bin_ = tmp_path / "proc", tmp_path / "bin"
    for pid, cmdline in [(1, pid1), (5, "nginx: worker process"), (6, "nginx: worker process")]:
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(cmdline.encode() + b"\0\0")
    bin_.mkdir()
    leave = (
        ""
        if old_exit_after_s is None
        else f"(sleep {old_exit_after_s}; rm -rf {proc}/5 {proc}/6) &"
    )
    (bin_ / "fake-reload").write_text(
        f"""#!/bin/sh
mkdir -p {proc}/9; printf 'nginx: worker process\\0' > {proc}/9/cmdline
printf 'nginx: worker process is shutting down\\0' > {proc}/5/cmdline
{leave}
"""
    )
    (bin_ / "nginx").write_text(
        f"""#!/bin/sh
echo "$@" >> {tmp_path}/calls
case "$1" in
  -t) {"exit 0" if config_ok else 'echo "nginx: [emerg] unexpected end of file" >&2; exit 1'} ;;
  -s) exec fake-reload ;;
esac
"""
    )
    for script in bin_.iterdir():
        script.chmod(0o755)
    return {"PATH": f"{bin_}:{os.environ['PATH']}", "DEPLOYTOOLS_PROC": str(proc)}


class ShellProxy:
    """The proxy container as this machine's sh: exec_run runs argv with `env`, a detached exec
    is a child process, the kill API's SIGHUP runs the fake master's reload."""

    name = "dtroll-proxy"
    id = "dtroll-proxy-id"

    def __init__(self, env: dict[str, str], config: Path) -> None:
        self.env, self.config = env, config
        self.client = SimpleNamespace(api=self)
        self.execs: dict[str, Any] = {}

    def _argv(self, argv: list[str]) -> list[str]:
        return [str(self.config) if a == proxy.CONFIG_PATH else a for a in argv]

    def exec_run(self, argv: list[str]) -> tuple[int, bytes]:
        done = subprocess.run(self._argv(argv), env=self.env, capture_output=True, timeout=30)
        return done.returncode, done.stdout + done.stderr

    def exec_create(self, container: str, argv: list[str]) -> dict[str, str]:
        assert container == self.id
        exec_id = f"exec-{len(self.execs)}"
        self.execs[exec_id] = self._argv(argv)
        return {"Id": exec_id}

    def exec_start(self, exec_id: str, *, detach: bool) -> None:
        assert detach
        self.execs[exec_id] = subprocess.Popen(self.execs[exec_id], env=self.env)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        code = self.execs[exec_id].poll()
        return {"Running": code is None, "ExitCode": code}

    def kill(self, *, signal: str) -> None:
        with (self.config.parent / "calls").open("a") as calls:
            calls.write(f"{signal}\n")
        if signal == "SIGHUP":
            subprocess.run(["fake-reload"], env=self.env, check=True, timeout=30)

    def waiters_done(self) -> bool:
        return all(p.wait(timeout=30) is not None for p in self.execs.values())


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls").read_text().splitlines()


def test_prepare_tests_the_config_and_reloads_nothing_then_the_cut_signals_and_waits(
    tmp_path: Path,
) -> None:
    config = tmp_path / "default.conf"
    config.write_text(proxy.render("app"))
    gateway = ShellProxy(fake_nginx(tmp_path), config)
    prepared = proxy.prepare(gateway, "app_2", timeout_s=10)
    assert config.read_text() == proxy.render("app_2")
    assert calls(tmp_path) == ["-t -q"]  # tested, not reloaded
    assert (prepared.old_workers, prepared.master_is_pid1) == (("5", "6"), True)
    time.sleep(0.2)
    assert gateway.exec_inspect(prepared.waiter)["Running"]  # waits for a reload
    started = time.monotonic()
    proxy.cut(prepared)
    assert time.monotonic() - started >= 0.3  # the old workers' exit was waited for
    assert calls(tmp_path) == ["-t -q", "SIGHUP"]  # no process started by the cut
    assert gateway.waiters_done()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "calls", "default.conf", "proc"]


def test_a_switch_between_two_names_of_one_container_does_not_wait(tmp_path: Path) -> None:
    config = tmp_path / "default.conf"
    config.write_text(proxy.render("172.20.0.5"))
    gateway = ShellProxy(fake_nginx(tmp_path), config)
    started = time.monotonic()
    proxy.switch(gateway, "app", wait=False)
    assert time.monotonic() - started < 0.3  # the old workers (0.3 s) were not waited for
    assert config.read_text() == proxy.render("app")
    assert calls(tmp_path) == ["-t -q", "SIGHUP"]
    assert gateway.execs == {}  # no waiter


def test_a_proxy_whose_pid_1_is_not_the_nginx_master_is_reloaded_by_nginx_s_reload(
    tmp_path: Path,
) -> None:
    config = tmp_path / "default.conf"
    config.write_text(proxy.render("app"))
    gateway = ShellProxy(fake_nginx(tmp_path, pid1="/bin/sh /entrypoint.sh"), config)
    proxy.switch(gateway, "app_2", timeout_s=10)
    assert config.read_text() == proxy.render("app_2")
    assert calls(tmp_path) == ["-t -q", "-s reload"]
    assert gateway.waiters_done()


def test_a_config_refused_by_nginx_is_never_loaded_and_the_previous_file_is_put_back(
    tmp_path: Path,
) -> None:
    config = tmp_path / "default.conf"
    config.write_text(proxy.render("app"))
    gateway = ShellProxy(fake_nginx(tmp_path, config_ok=False), config)
    with pytest.raises(ExternalCommandFailed, match="nginx -t; the running config keeps") as err:
        proxy.switch(gateway, "app_2", timeout_s=10)
    assert "unexpected end of file" in err.value.message
    assert config.read_text() == proxy.render("app")
    assert calls(tmp_path) == ["-t -q"]  # no reload
    assert gateway.execs == {}  # no waiter
    assert not list(tmp_path.glob("default.conf.*"))


def test_switch_has_a_deadline_when_old_workers_never_exit(tmp_path: Path) -> None:
    config = tmp_path / "default.conf"
    config.write_text(proxy.render("app"))
    gateway = ShellProxy(fake_nginx(tmp_path, old_exit_after_s=None), config)
    started = time.monotonic()
    with pytest.raises(
        DeadlineExceeded, match=r"old workers \(5 6\) did not finish within 1 s"
    ) as err:
        proxy.switch(gateway, "app_2", timeout_s=1)
    assert time.monotonic() - started < 5  # the waiter's own deadline ended it
    assert "upstream app_2" in (err.value.untouched or "")


class NetworkedContainer:
    def __init__(self, name: str, networks: dict[str, dict[str, str]]) -> None:
        self.name = name
        self.attrs = {"NetworkSettings": {"Networks": networks}}
        self.reloaded = False

    def reload(self) -> None:
        self.reloaded = True


def test_a_pin_names_the_address_on_the_network_shared_with_the_proxy() -> None:
    gateway = NetworkedContainer("p_proxy_1", {"p_default": {"IPAddress": "172.20.0.2"}})
    app = NetworkedContainer(
        "p_app_2",
        {"other": {"IPAddress": "10.0.0.9"}, "p_default": {"IPAddress": "172.20.0.5"}},
    )
    assert proxy.address(app, gateway) == "172.20.0.5" and app.reloaded
    alone = NetworkedContainer("p_app_3", {"other": {"IPAddress": "10.0.0.9"}})
    assert proxy.address(alone, gateway) == "p_app_3"
    assert "proxy_pass http://$app_upstream:8080;" in proxy.render("172.20.0.5")


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
