"""The rest of the runbook on the real engine, on the shared dtdep stack (environment dtrest):

- deploy windows: a deploy outside its window changes nothing (same app container, no release
  record, no backup, no lock); with --outside-window it deploys and the reason is in the release
  record and the report; rollback is never blocked;
- the incident report after that rollback, with the app's logs fetched from the engine;
- volume snapshots: a round trip with checksums of every file, a corrupted archive refused.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from deploytools.cli import cli
from deploytools.config import load_config
from deploytools.context import StepContext
from deploytools.session import open_environment
from tests.helpers.shared_stack import NEVER_HEALTHY
from tests.helpers.stacks import ComposeStack

if TYPE_CHECKING:
    from tests.helpers.shared_stack import ImageVariants, SharedStack

pytestmark = pytest.mark.integration

V1, V2 = "rbac-api-test:1.15.1", "rbac-api-test:1.15.2"


def _window_excluding_now() -> str:
    """A one-hour daily window three hours from now: this test never runs inside it."""
    start = datetime.now(UTC) + timedelta(hours=3)
    return f'\n[windows.dtrest]\nallow = ["* {start:%H}:00-{start + timedelta(hours=1):%H}:00"]\n'


@pytest.fixture(scope="module")
def stack(
    dtdep_stack: SharedStack, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ComposeStack, Path, str]]:
    tmp_dir = tmp_path_factory.mktemp("dtrest-win")
    with dtdep_stack.env("rest", tmp_dir, environment="dtrest") as env:
        try:
            env.config_path.write_text(env.config_path.read_text() + _window_excluding_now())
            yield env.stack, env.config_path, env.store_volume
        finally:
            with contextlib.suppress(Exception):
                docker_client.volumes.get(f"{env.stack.project}_uploads").remove(force=True)


def deploytools(path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(path), "--json", *args])


def stored(path: Path) -> tuple[list[Any], list[Any], Any]:
    ctx = StepContext(config=load_config(path), progress=lambda _m: None)
    with open_environment(ctx, "dtrest") as session:
        h = session.history
        return h.releases(), h.manifests(), h.lock()


def test_outside_the_window_nothing_changes_then_a_reason_lets_it_through(
    stack: tuple[ComposeStack, Path, str],
) -> None:
    compose, path, _ = stack
    app_before = compose.container("app")
    revision_before = compose.psql("SELECT version_num FROM alembic_version")

    refused = deploytools(path, "deploy", "--env", "dtrest", "--image", V2)
    assert refused.exit_code == 2, refused.output
    error = json.loads(refused.stdout)["error"]
    assert error["type"] == "OutsideWindow"
    assert "next allowed" in error["message"]
    app_after = compose.container("app")
    assert app_after.id == app_before.id
    assert app_after.attrs["Config"]["Image"] == V1
    assert compose.psql("SELECT version_num FROM alembic_version") == revision_before
    assert stored(path) == ([], [], None)  # no record, no backup, no lock

    refused_migration = deploytools(path, "migrate", "--env", "dtrest", "--image", V2)
    assert refused_migration.exit_code == 2, refused_migration.output
    assert compose.psql("SELECT version_num FROM alembic_version") == revision_before

    allowed = deploytools(
        path, "deploy", "--env", "dtrest", "--image", V2, "--outside-window", "CVE-2026-0001 fix"
    )
    assert allowed.exit_code == 0, allowed.output
    record = json.loads(allowed.stdout)["result"]["record"]
    assert record["outcome"] == "succeeded"
    assert "CVE-2026-0001 fix" in record["outside_window"]
    assert compose.container("app").attrs["Config"]["Image"] == V2
    releases, _, _ = stored(path)
    assert releases[-1].outside_window == record["outside_window"]

    report = deploytools(path, "report", "--env", "dtrest", "--format", "json")
    assert report.exit_code == 0, report.output
    assert "outside the deploy windows" in report.stdout
    assert "CVE-2026-0001 fix" in report.stdout


def test_rollback_is_never_blocked_by_a_window(stack: tuple[ComposeStack, Path, str]) -> None:
    compose, path, _ = stack
    back = deploytools(path, "rollback", "--env", "dtrest", "--yes")
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["result"]["outcome"] == "succeeded"
    assert compose.container("app").attrs["Config"]["Image"] == V1


def test_incident_report_after_the_rollback_on_the_real_engine(
    stack: tuple[ComposeStack, Path, str], tmp_path: Path
) -> None:
    _, path, _ = stack
    summary = tmp_path / "summary.md"
    result = CliRunner().invoke(
        cli,
        ["--config", str(path), "report", "--incident", "--env", "dtrest"],
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 0, result.output
    markdown = result.stdout
    assert markdown.startswith("# Incident report: rbac-api dtrest, release 0001")
    assert f"- **Image**: `{V2}` → `{V1}`" in markdown
    assert "- **Writes dropped**: none: no restore, every write was kept" in markdown
    assert "outside the deploy windows: " in markdown  # the timeline has the recorded reason
    # No log lines were stored: the app container's logs were fetched from the engine.
    assert "Source: fetched now from " in markdown
    logs = markdown.split("## Logs around the failure", 1)[1].split("## Escalation", 1)[0]
    assert logs.count("\n") > 5
    assert summary.read_text() == markdown + "\n"
    as_json = deploytools(path, "report", "--incident", "--env", "dtrest")
    assert json.loads(as_json.stdout)["result"]["rolled_back"]["record_id"] == "0002"


def _sh_in(client: Any, image: str, script: str, volumes: dict[str, Any]) -> str:
    """`script` in a throwaway container of `image`; its stdout. Removed with its anonymous
    volumes (the PostgreSQL image declares one; `run(remove=True)` would leave it behind)."""
    container = client.containers.run(
        image, ["sh", "-c", script], entrypoint=[], detach=True, user="0",
        network_mode="none", volumes=volumes,
    )  # fmt: skip
    try:
        status = container.wait(timeout=60)["StatusCode"]
        assert status == 0, container.logs().decode()
        return bytes(container.logs(stdout=True, stderr=False)).decode()
    finally:
        container.remove(force=True, v=True)


def _in_volume(client: Any, image: str, volume: str, script: str) -> str:
    return _sh_in(client, image, script, {volume: {"bind": "/v", "mode": "rw"}})


CHECKSUMS = "cd /v && find . -type f | sort | xargs sha256sum"


def test_volume_snapshot_round_trip_and_a_corrupted_archive_refused(
    stack: tuple[ComposeStack, Path, str], docker_client: Any, postgres_image: str
) -> None:
    compose, path, store = stack
    # A Compose volume of the stack, as a `volumes: {uploads: {}}` in the Compose file makes it.
    volume = f"{compose.project}_uploads"
    docker_client.volumes.create(
        name=volume,
        labels={
            "com.docker.compose.project": compose.project,
            "com.docker.compose.volume": "uploads",
        },
    )
    _in_volume(docker_client, postgres_image, volume,
               "mkdir -p /v/a && echo one > /v/a/1.txt && head -c 200000 /dev/urandom > /v/b.bin"
               " && chown -R 999 /v/a")  # fmt: skip
    original = _in_volume(docker_client, postgres_image, volume, CHECKSUMS)
    assert "./a/1.txt" in original and "./b.bin" in original
    with_volumes = path.with_name("deploy-volumes.toml")
    with_volumes.write_text(
        path.read_text().replace("retention = 10", 'retention = 10\nvolumes = ["uploads"]')
    )

    created = deploytools(with_volumes, "backup", "create", "--env", "dtrest")
    assert created.exit_code == 0, created.output
    body = json.loads(created.stdout)["result"]
    manifest = body["manifest"]
    snap = manifest["volumes"]["uploads"]
    assert snap["volume"] == volume
    assert len(snap["sha256"]) == 64 and snap["size"] > 200000
    assert snap["entries"] >= 4  # ., ./a, ./a/1.txt, ./b.bin
    assert body["verification"]["ok"] is True
    backup_id = manifest["id"]

    # Files change after the backup; the restore brings back exactly the files backed up.
    _in_volume(docker_client, postgres_image, volume, "rm /v/a/1.txt && echo new > /v/c.txt")
    restored = deploytools(with_volumes, "backup", "restore", "--env", "dtrest", backup_id, "--yes")
    assert restored.exit_code == 0, restored.output
    assert _in_volume(docker_client, postgres_image, volume, CHECKSUMS) == original
    owner = _in_volume(docker_client, postgres_image, volume, "stat -c %u /v/a/1.txt")
    assert owner.strip() == "999"

    # One byte of the archive changed in the store: verify fails, restore refuses, the volume
    # is left as it was.
    archive = f"/s/dtrest/backups/{backup_id}.volume-uploads.tar"
    _sh_in(
        docker_client,
        postgres_image,
        f"printf X | dd of={archive} bs=1 seek=700 conv=notrunc 2>/dev/null",
        {store: {"bind": "/s", "mode": "rw"}},
    )
    _in_volume(docker_client, postgres_image, volume, "echo later > /v/d.txt")
    before = _in_volume(docker_client, postgres_image, volume, CHECKSUMS)
    verified = deploytools(with_volumes, "backup", "verify", "--env", "dtrest", backup_id)
    assert verified.exit_code == 1, verified.output
    assert "archive of volume uploads" in json.loads(verified.stdout)["error"]["message"]
    assert "corrupted" in json.loads(verified.stdout)["error"]["message"]
    refused = deploytools(with_volumes, "backup", "restore", "--env", "dtrest", backup_id, "--yes")
    assert refused.exit_code == 1, refused.output
    assert json.loads(refused.stdout)["error"]["untouched"] == "the database was not touched"
    assert _in_volume(docker_client, postgres_image, volume, CHECKSUMS) == before


def test_off_host_copies_to_a_directory_plain_and_encrypted_then_verified(
    stack: tuple[ComposeStack, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    _, path, _ = stack
    plain_dir, secret_dir = tmp_path / "plain", tmp_path / "secret"
    plain_config = path.with_name("deploy-copy.toml")
    plain_config.write_text(
        path.read_text().replace("retention = 10", f'retention = 10\ncopy_to = "dir:{plain_dir}"')
    )
    created = deploytools(plain_config, "backup", "create", "--env", "dtrest", "--no-verify")
    assert created.exit_code == 0, created.output
    manifest = json.loads(created.stdout)["result"]["manifest"]
    (copy,) = manifest["copies"]
    copied = Path(copy["location"].removeprefix("dir:"))
    assert copied == plain_dir / "dtrest" / f"{manifest['id']}.dump"
    assert copied.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format, as it is
    assert copy["sha256"] == copy["content_sha256"] == manifest["sha256"]
    assert oct(copied.stat().st_mode & 0o777) == "0o600"
    assert json.loads((plain_dir / "dtrest" / f"{manifest['id']}.json").read_text())["copies"]
    ok = deploytools(
        plain_config, "backup", "verify", "--env", "dtrest", manifest["id"], "--remote"
    )
    assert ok.exit_code == 0, ok.output
    damaged = bytearray(copied.read_bytes())
    damaged[100] ^= 0xFF
    copied.write_bytes(bytes(damaged))
    bad = deploytools(
        plain_config, "backup", "verify", "--env", "dtrest", manifest["id"], "--remote"
    )
    assert bad.exit_code == 1, bad.output
    assert "is corrupted" in json.loads(bad.stdout)["error"]["message"]

    monkeypatch.setenv("DTREST_BACKUP_KEY", Fernet.generate_key().decode())
    secret_config = path.with_name("deploy-secret.toml")
    secret_config.write_text(
        path.read_text().replace(
            "retention = 10",
            f'retention = 10\ncopy_to = "dir:{secret_dir}"\n'
            'encryption_key_env = "DTREST_BACKUP_KEY"',
        )
    )
    created = deploytools(secret_config, "backup", "create", "--env", "dtrest", "--no-verify")
    assert created.exit_code == 0, created.output
    manifest = json.loads(created.stdout)["result"]["manifest"]
    (copy,) = manifest["copies"]
    assert copy["encrypted"] is True and copy["location"].endswith(".dump.fernet")
    at_rest = Path(copy["location"].removeprefix("dir:")).read_bytes()
    assert b"PGDMP" not in at_rest and copy["sha256"] != manifest["sha256"]
    verify = ("backup", "verify", "--env", "dtrest", manifest["id"], "--remote")
    ok = deploytools(secret_config, *verify)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["result"]["copies"][0]["ok"] is True
    monkeypatch.setenv("DTREST_BACKUP_KEY", Fernet.generate_key().decode())
    wrong_key = deploytools(secret_config, *verify)
    assert wrong_key.exit_code == 1, wrong_key.output
    assert "does not decrypt" in json.loads(wrong_key.stdout)["error"]["message"]


def test_off_host_copy_to_a_local_s3_compatible_server_verified(
    stack: tuple[ComposeStack, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.helpers.stacks import free_port

    _, path, _ = stack
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        # The key id must not equal a word of the output: output masks an access key's value.
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "test-access-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "dtrest-secret"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            monkeypatch.setenv(name, value)
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="dtrest-backups")
        config = path.with_name("deploy-s3.toml")
        config.write_text(
            path.read_text().replace(
                "retention = 10",
                'retention = 10\ncopy_to = "s3://dtrest-backups/ci"\n'
                f's3_endpoint_url = "{endpoint}"',
            )
        )
        created = deploytools(config, "backup", "create", "--env", "dtrest", "--no-verify")
        assert created.exit_code == 0, created.output
        manifest = json.loads(created.stdout)["result"]["manifest"]
        (copy,) = manifest["copies"]
        key = f"ci/dtrest/{manifest['id']}.dump"
        assert copy["location"] == f"s3://dtrest-backups/{key}"
        body = s3.get_object(Bucket="dtrest-backups", Key=key)["Body"].read()
        assert body.startswith(b"PGDMP") and copy["sha256"] == manifest["sha256"]
        listed = s3.list_objects_v2(Bucket="dtrest-backups", Prefix="ci/dtrest/")["Contents"]
        assert {o["Key"] for o in listed} == {key, f"ci/dtrest/{manifest['id']}.json"}
        verify = ("backup", "verify", "--env", "dtrest", manifest["id"], "--remote")
        ok = deploytools(config, *verify)
        assert ok.exit_code == 0, ok.output
        s3.put_object(Bucket="dtrest-backups", Key=key, Body=body[:-10])
        bad = deploytools(config, *verify)
        assert bad.exit_code == 1, bad.output
        assert "is corrupted" in json.loads(bad.stdout)["error"]["message"]
        s3.delete_object(Bucket="dtrest-backups", Key=key)
        gone = deploytools(config, *verify)
        assert gone.exit_code == 1, gone.output
        assert "is gone" in json.loads(gone.stdout)["error"]["message"]
    finally:
        server.stop()


def test_incident_report_after_a_failed_release_rolled_back_automatically(
    stack: tuple[ComposeStack, Path, str], image_variants: ImageVariants
) -> None:
    compose, path, _ = stack
    never_healthy = image_variants.build(
        V2, "rbac-api-test:dtdep-never-healthy", dockerfile=NEVER_HEALTHY, files={}
    )
    quick = path.with_name("deploy-quick.toml")
    quick.write_text(path.read_text().replace("health_timeout_s = 60.0", "health_timeout_s = 10"))
    failed = deploytools(
        quick, "deploy", "--env", "dtrest", "--image", never_healthy, "--outside-window", "test"
    )
    assert failed.exit_code == 1, failed.output
    compose.wait_healthy("app")

    result = CliRunner().invoke(
        cli,
        ["--config", str(quick), "report", "--incident", "--env", "dtrest", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["image"] == never_healthy
    assert report["outcome"] == "rolled-back"
    assert "is not healthy after 10 s" in report["error"]
    assert report["rolled_back"]["image_from"] == never_healthy
    assert report["rolled_back"]["writes_dropped"] == "none: no restore, every write was kept"
    texts = [entry["text"] for entry in report["timeline"]]
    assert any(t.startswith("rollback ") and t.endswith("ended: succeeded") for t in texts)
    assert report["logs"] and report["logs_source"].startswith("fetched now from ")
