"""Escalation contacts and channels ([contacts] in deploy.toml), as the report and the failure
notices show them: who to call, in which order, and where people are told."""

from __future__ import annotations

from deploytools.config import ContactsConfig


def channel_lines(contacts: ContactsConfig) -> list[str]:
    """Where people are told: "Slack: #chan", "Status page: URL", "Email: list"."""
    shown = (
        ("Slack", contacts.slack_channel),
        ("Status page", contacts.status_page),
        ("Email", contacts.email_list),
    )
    return [f"{label}: {value}" for label, value in shown if value]


def tier_lines(contacts: ContactsConfig) -> list[str]:
    """Who is called, in order: "1. on-call engineer (at once): @alice, +1 555 0100"."""
    lines = []
    for i, tier in enumerate(contacts.tiers, 1):
        when = "at once" if tier.after_min == 0 else f"after {tier.after_min} min"
        lines.append(f"{i}. {tier.name} ({when}): {', '.join(tier.people)}")
    return lines


def markdown(contacts: ContactsConfig) -> str:
    """A Markdown section body; says how to configure it when nothing is."""
    tiers, channels = tier_lines(contacts), channel_lines(contacts)
    if not tiers and not channels:
        return "_No contacts configured ([contacts] in deploy.toml)._\n"
    parts = []
    if tiers:
        parts.append("Escalation, in order:\n\n" + "\n".join(tiers) + "\n")
    if channels:
        parts.append("\n".join(f"- {line}" for line in channels) + "\n")
    return "\n".join(parts)


def plain(contacts: ContactsConfig) -> str:
    """One short paragraph for a notification ("" when nothing is configured)."""
    lines = tier_lines(contacts) + channel_lines(contacts)
    return ("Escalation: " + "; ".join(lines)) if lines else ""
