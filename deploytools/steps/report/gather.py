"""`deploytools report`'s reading: the release record and what surrounds it, from the
environment's history (and staging's, when its engine can be reached), and the checks' results
from files or from the records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deploytools import session as sessions
from deploytools.context import StepContext
from deploytools.errors import EnvironmentUnreachable, UsageError
from deploytools.pipeline import runbook
from deploytools.steps.report.document import ReleaseDocument, build_document, newest_release
from deploytools.steps.report.evidence import load_evidence, stored_evidence
from deploytools.store.records import BackupManifest, ReleaseRecord, Verification


def gather(
    ctx: StepContext,
    *,
    environment: str,
    release_id: str | None = None,
    results: Sequence[Path] = (),
) -> ReleaseDocument:
    """The document of `release_id` (default: the newest record) of `environment`.

    :param ctx: the step context.
    :param environment: the environment whose history holds the release.
    :param release_id: a release record id ("0007"); None: the newest.
    :param results: JSON result files, or directories of them, of the checks.
    """
    config = ctx.config
    config.environment(environment)
    files: list[Path] = []
    for path in results:
        if not path.exists():
            ctx.progress(f"report: no check results at {path}; left out")
            continue
        files.extend(sorted(path.rglob("*.json")) if path.is_dir() else [path])
    evidence = load_evidence(files) if results else None
    with sessions.open_environment(ctx, environment, read_only=True) as session:
        history = session.history
        records = history.releases()
        if not records:
            raise UsageError(
                f"environment {environment} has no release records yet",
                untouched="nothing was rendered",
                hint=f"deploy first: `deploytools deploy --env {environment} --image IMAGE`",
            )
        if release_id is None:
            record = newest_release(records)
        else:
            found = [r for r in records if r.id == release_id.zfill(4)]
            if not found:
                known = ", ".join(r.id for r in records[-5:])
                raise UsageError(
                    f"no release {release_id} in environment {environment}",
                    untouched="nothing was rendered",
                    hint=f"the latest: {known}; `deploytools history --env {environment}`",
                )
            record = found[0]
        manifest: BackupManifest | None = None
        verification: Verification | None = None
        if record.backup_id:
            try:
                manifest = history.manifest(record.backup_id)
            except UsageError:
                manifest = None
            verification = history.verification(record.backup_id)
    staging_record = None
    if environment != runbook.STAGING and runbook.STAGING in config.environments:
        staging_record = _staging_record(ctx, record.image)
    if evidence is None:
        # No --results: what smoke, validate, verify and monitor saved in the records.
        evidence = stored_evidence(staging_record, record)
    return build_document(
        config,
        environment=environment,
        record=record,
        records=records,
        manifest=manifest,
        verification=verification,
        evidence=evidence,
        staging_record=staging_record,
    )


def _staging_record(ctx: StepContext, image: str) -> ReleaseRecord | None:
    """Staging's newest deploy of `image`, when staging's engine can be reached from here."""
    try:
        with sessions.open_environment(ctx, runbook.STAGING, read_only=True) as session:
            for record in reversed(session.history.releases()):
                if record.kind == "deploy" and record.image == image:
                    return record
    except EnvironmentUnreachable:
        ctx.progress("report: staging cannot be reached from here; its deploy is left out")
    return None
