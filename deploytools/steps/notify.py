"""`deploytools notify`: tell people (Slack) and the world (a status page) what a release does.

The runbook's "notify stakeholders of the maintenance window, post to #deployments, update the
status page", and the same at the end: success, failure, rollback. Each hook's URL is a secret
read from the environment variable deploy.toml names ([notifications]); an unset one is skipped.
A hook that fails is reported in the result and does not fail the step, since a deploy must not
stop because Slack is down, unless the configuration or the caller says it is required. URLs are
never put in messages or errors: they carry their own credentials.

With a GitHub token (github.token_env) and a release, the event is also the release's GitHub
Deployment in that environment (github_deployments.py): the maintenance window opens it
(in_progress), then success, failure, or inactive for a release that was rolled back; its status
links the Actions run and the service.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from deploytools import contacts
from deploytools.context import StepContext
from deploytools.errors import DeployError, EnvironmentUnreachable, UsageError
from deploytools.github_deployments import Deployment, GitHubDeployments, run_url

EVENTS = ("maintenance-window", "success", "failure", "rollback")

#: The status page's state for each event (the words of Atlassian Statuspage's components and
#: incidents, which most status pages understand).
STATUS_PAGE_STATE = {
    "maintenance-window": "under_maintenance",
    "success": "operational",
    "failure": "degraded_performance",
    "rollback": "operational",
}

#: The GitHub Deployment status each event sets on the release's deployment.
GITHUB_STATE = {
    "maintenance-window": "in_progress",
    "success": "success",
    "failure": "failure",
    "rollback": "inactive",
}

#: Characters of an attachment shown in Slack (a section block holds 3000 with the fences).
_ATTACHMENT_CHARS = 2900

_SLACK_HEADLINE = {
    "maintenance-window": ":construction: {who}: the maintenance window for {what} begins",
    "success": ":white_check_mark: {who}: {what} is deployed and verified",
    "failure": ":x: {who}: {what} failed",
    "rollback": ":rewind: {who}: {what} was rolled back",
}

#: Posts JSON to a URL with a timeout; returns (HTTP status, the first bytes of the answer).
Poster = Callable[[str, Mapping[str, Any], float], tuple[int, str]]


def default_post(url: str, payload: Mapping[str, Any], timeout_s: float) -> tuple[int, str]:
    # Imported here, not at the top: `deploytools --help` must not load requests (start-up time).
    import requests

    answer = requests.post(url, json=dict(payload), timeout=timeout_s)
    return answer.status_code, answer.text[:200]


@dataclass(frozen=True)
class Notice:
    """What happened, to whom it is told."""

    event: str
    project: str
    environment: str
    release: str = ""
    message: str = ""
    link: str = ""
    #: Who to call and where people are told ([contacts]); failure and rollback notices only.
    escalation: str = ""
    #: A document attached to the notice (the incident report's Markdown), "" for none.
    attachment: str = ""

    @property
    def subject(self) -> str:
        return f"{self.release} on {self.environment}" if self.release else self.environment


@dataclass(frozen=True)
class Delivery:
    """One hook's answer."""

    hook: str  # slack | status-page | github-deployment
    ok: bool
    status: int | None  # HTTP status; None when no answer came
    detail: str


@dataclass(frozen=True)
class NotifyResult:
    notice: Notice
    deliveries: tuple[Delivery, ...]
    skipped: tuple[str, ...]  # hooks whose URL variable (or GitHub token, or release) is unset

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.deliveries)

    @property
    def failed(self) -> tuple[Delivery, ...]:
        return tuple(d for d in self.deliveries if not d.ok)


def slack_payload(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (notifications, fallbacks) and blocks."""
    headline = _SLACK_HEADLINE[notice.event].format(who=notice.project, what=notice.subject)
    lines = [headline]
    if notice.message:
        lines.append(notice.message)
    if notice.link:
        lines.append(f"<{notice.link}|the run>")
    if notice.escalation:
        lines.append(notice.escalation)
    text = "\n".join(lines)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if notice.attachment:
        # A section's text holds at most 3000 characters; the whole report is in the run.
        shown = notice.attachment[:_ATTACHMENT_CHARS]
        cut = "\n…(cut; the whole report is in the run)" if shown != notice.attachment else ""
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{shown}{cut}```"}}
        )
    return {"text": text, "blocks": blocks}


def status_page_payload(notice: Notice) -> dict[str, Any]:
    """A plain JSON event for a status page's inbound hook (or a small relay in front of it)."""
    payload = {
        "event": notice.event,
        "status": STATUS_PAGE_STATE[notice.event],
        "service": notice.project,
        "environment": notice.environment,
        "release": notice.release,
        "message": notice.message,
        "link": notice.link,
    }
    # Only when there are: a hook relaying the plain event sees the same fields as before.
    if notice.escalation:
        payload["contacts"] = notice.escalation
    if notice.attachment:
        payload["report"] = notice.attachment
    return payload


def run(
    ctx: StepContext,
    *,
    event: str,
    environment: str,
    release: str = "",
    message: str = "",
    link: str = "",
    required: bool | None = None,
    environ: Mapping[str, str] | None = None,
    post: Poster = default_post,
    github: GitHubDeployments | None = None,
    attachment: str = "",
) -> NotifyResult:
    """Send `event` to every configured hook.

    :param ctx: the step context (configuration).
    :param event: one of EVENTS.
    :param environment: the environment it concerns (a key of deploy.toml).
    :param release: the release (tag or version) it concerns; "" when none.
    :param message: more words for people, added to the message.
    :param link: a URL to the details; default: the GitHub Actions run, when in one.
    :param required: whether a failing hook raises EnvironmentUnreachable; None: the
        configuration's notifications.required.
    :param environ: where the hooks' URL variables are read; default os.environ.
    :param post: how JSON is posted (tests swap it).
    :param github: the GitHub deployments to record the event in; default: made from the
        configuration when the token variable is set (None without one: skipped).
    :param attachment: a document sent with the notice (the incident report's Markdown).
    """
    if event not in EVENTS:
        raise UsageError(
            f'unknown event "{event}"',
            untouched="nothing was sent",
            hint="events: " + ", ".join(EVENTS),
        )
    config = ctx.config
    env_config = config.environment(environment)  # unknown: a usage error, before sending
    settings = config.notifications
    env = os.environ if environ is None else environ
    # In GitHub Actions the run is the natural link, when none is given.
    link = link or run_url(env)
    # Failures and rollbacks say who is called and where people are told ([contacts]).
    escalation = contacts.plain(config.contacts) if event in ("failure", "rollback") else ""
    notice = Notice(
        event, config.project.name, environment, release, message, link, escalation, attachment
    )
    hooks = (
        ("slack", settings.slack_webhook_env, slack_payload(notice)),
        ("status-page", settings.status_page_hook_env, status_page_payload(notice)),
    )
    deliveries: list[Delivery] = []
    skipped: list[str] = []
    for hook, variable, payload in hooks:
        url = env.get(variable, "").strip()
        if not url:
            skipped.append(hook)
            continue
        ctx.progress(f"notify: {event} to {hook}")
        deliveries.append(_deliver(hook, variable, url, payload, settings.timeout_s, post))
    if github is None:
        github = GitHubDeployments.from_config(config, env)
    if github is None or not release:
        skipped.append("github-deployment")
    else:
        ctx.progress(f"notify: {event} to the GitHub deployment of {release} in {environment}")
        deployment = Deployment(
            id=0,
            environment=environment,
            ref=release,
            release=release,
            log_url=link,
            environment_url=env_config.base_url,
        )
        deliveries.append(_record_on_github(github, deployment, event, message))
    result = NotifyResult(notice, tuple(deliveries), tuple(skipped))
    must = settings.required if required is None else required
    if must and (result.failed or not deliveries):
        problems = "; ".join(f"{d.hook}: {d.detail}" for d in result.failed) or (
            f"no hook is configured ({settings.slack_webhook_env} and "
            f"{settings.status_page_hook_env} are unset)"
        )
        raise EnvironmentUnreachable(
            f"notify {event}: {problems}",
            untouched="the environment; only the notification was not delivered",
            hint="check the webhook URLs' secrets, or tell people by hand",
            facts={"deliveries": [asdict(d) for d in deliveries], "skipped": skipped},
        )
    return result


def _record_on_github(
    github: GitHubDeployments, deployment: Deployment, event: str, message: str
) -> Delivery:
    """Find or create the release's deployment in the environment, and set the event's state."""
    state = GITHUB_STATE[event]
    try:
        found = github.find(deployment.environment, deployment.ref) or github.create(
            deployment.environment, ref=deployment.ref, release=deployment.release
        )
        github.set_status(
            Deployment(
                found.id,
                deployment.environment,
                deployment.ref,
                deployment.release,
                deployment.log_url,
                deployment.environment_url,
            ),
            state,
            description=message or event,
        )
    except DeployError as exc:
        return Delivery("github-deployment", False, None, exc.message)
    return Delivery("github-deployment", True, None, f"deployment {found.id}: {state}")


def _deliver(
    hook: str,
    variable: str,
    url: str,
    payload: Mapping[str, Any],
    timeout_s: float,
    post: Poster,
) -> Delivery:
    import requests  # the exceptions' names only; see default_post

    try:
        status, body = post(url, payload, timeout_s)
    except requests.RequestException as exc:
        # The exception's text holds the URL, a secret: name only its kind.
        return Delivery(hook, False, None, f"no answer from ${variable} ({type(exc).__name__})")
    if 200 <= status < 300:
        return Delivery(hook, True, status, f"delivered (HTTP {status})")
    snippet = " ".join(body.split())[:120]
    return Delivery(hook, False, status, f"HTTP {status} from ${variable}: {snippet}")
