"""Deploy windows and freezes: when `deploy`, `migrate` and `pipeline run` may change things.

The runbook says "don't deploy during peak usage". `[windows.ENV]` in deploy.toml lists weekly
windows ("Mon-Fri 22:00-06:00", times in UTC; a window whose end is not after its start runs past
midnight into the next day, and belongs to the day it starts on) and dated freezes. An environment
without a [windows.ENV] table, or with no `allow` entries, may be changed at any time but during
its freezes. Rollback never asks: going back is always allowed.

Everything here is a pure function of the configuration and a clock passed in, so the rules are
tested without waiting for Friday night.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from deploytools.errors import UsageError

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW_RE = re.compile(
    r"^\s*(?P<days>[A-Za-z*,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
#: How far ahead the next allowed time is searched: beyond a year it is a configuration mistake.
_HORIZON = timedelta(days=366)


@dataclass(frozen=True)
class FreezeConfig:
    """A dated freeze: no deploy or migration from start to end (UTC, both days included)."""

    start: str
    end: str
    reason: str = ""


@dataclass(frozen=True)
class WindowsConfig:
    """When an environment may be changed: the table [windows.ENV] of deploy.toml."""

    # Weekly windows, "DAYS HH:MM-HH:MM" in UTC; none: at any time but during a freeze.
    allow: tuple[str, ...] = ()
    freezes: tuple[FreezeConfig, ...] = ()


class HasWindows(Protocol):
    """What the rules read from the configuration (deploytools.config.Config): the
    [windows.ENV] tables by environment."""

    @property
    def windows(self) -> Mapping[str, WindowsConfig]: ...


class OutsideWindow(UsageError):
    """A change was asked for outside the environment's deploy windows, or during a freeze.

    Exit code 2 (a usage error): nothing was done; wait for the time named, or pass
    --outside-window "REASON" to go on anyway (the reason is recorded and reported).
    """


@dataclass(frozen=True)
class Window:
    """A weekly window: on `days` (0 = Monday), from `start` for `minutes`."""

    text: str
    days: frozenset[int]
    start: time
    minutes: int

    def spans(self, day: date) -> tuple[datetime, datetime] | None:
        """The window opened on `day`, if it opens on that weekday."""
        if day.weekday() not in self.days:
            return None
        begin = datetime.combine(day, self.start, tzinfo=UTC)
        return begin, begin + timedelta(minutes=self.minutes)


@dataclass(frozen=True)
class Freeze:
    """No changes from `start` (inclusive) to `end` (exclusive), in UTC."""

    start: datetime
    end: datetime
    reason: str

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"freeze {_fmt(self.start)} to {_fmt(self.end)}{why}"


@dataclass(frozen=True)
class Rules:
    windows: tuple[Window, ...]
    freezes: tuple[Freeze, ...]

    @property
    def unrestricted(self) -> bool:
        return not self.windows and not self.freezes


def _fmt(moment: datetime) -> str:
    return moment.strftime("%a %Y-%m-%d %H:%M UTC")


def _minutes(text: str, *, end: bool) -> int:
    hours, _, mins = text.partition(":")
    value = int(hours) * 60 + int(mins)
    limit = 24 * 60 if end else 24 * 60 - 1
    if int(mins) > 59 or value > limit:
        raise ValueError(f'"{text}" is not a time of day (HH:MM, 00:00 to 23:59; an end 24:00)')
    return value


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if part in ("*", "daily"):
            days.update(range(7))
            continue
        first, _, last = part.partition("-")
        try:
            lo = _DAYS.index(first.strip()[:3]) if len(first.strip()) >= 3 else -1
            hi = _DAYS.index(last.strip()[:3]) if last else lo
        except ValueError:
            lo = hi = -1
        if lo < 0 or hi < 0:
            raise ValueError(f'"{part}" is not a day or a range of days (Mon, Mon-Fri, Sat,Sun, *)')
        # Fri-Mon wraps over the weekend.
        days.update((lo + i) % 7 for i in range((hi - lo) % 7 + 1))
    return frozenset(days)


def parse_window(text: str) -> Window:
    """ "Mon-Fri 22:00-06:00" -> a Window; ValueError saying what is wrong."""
    match = _WINDOW_RE.match(text)
    if not match:
        raise ValueError(f'"{text}" is not "DAYS HH:MM-HH:MM" (for example "Mon-Fri 22:00-06:00")')
    start = _minutes(match["start"], end=False)
    end = _minutes(match["end"], end=True)
    length = (end - start) % (24 * 60) or 24 * 60  # 00:00-24:00 and 06:00-06:00: a whole day
    return Window(text, _days(match["days"]), time(start // 60, start % 60), length)


def _moment(text: str, *, end: bool) -> datetime:
    """ "2026-12-24" (a whole day: an end date is included) or "2026-12-24T18:00Z"."""
    whole_day = "T" not in text
    try:
        if whole_day:
            moment = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            moment = datetime.strptime(text.strip(), "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(
            f'"{text}" is not a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MMZ)'
        ) from None
    if moment.year > 9000:
        # An end day is included (its next midnight is the end): 9999-12-31 would overflow.
        raise ValueError(f'"{text}" is too far in the future (a year up to 9000)')
    return moment + timedelta(days=1) if end and whole_day else moment


def parse(rules: WindowsConfig) -> Rules:
    """The table [windows.ENV] as Rules; ValueError naming the entry that is wrong."""
    windows = tuple(parse_window(w) for w in rules.allow)
    freezes = []
    for f in rules.freezes:
        start, end = _moment(f.start, end=False), _moment(f.end, end=True)
        if end <= start:
            raise ValueError(f'freeze "{f.start}" to "{f.end}" ends before it starts')
        freezes.append(Freeze(start, end, f.reason))
    return Rules(windows, tuple(freezes))


def rules_for(config: HasWindows, environment: str) -> Rules:
    table = config.windows.get(environment)
    return Rules((), ()) if table is None else parse(table)


def freeze_at(rules: Rules, now: datetime) -> Freeze | None:
    return next((f for f in rules.freezes if f.start <= now < f.end), None)


def window_at(rules: Rules, now: datetime) -> tuple[Window, datetime, datetime] | None:
    """The weekly window open at `now` (with its span), if any."""
    for window in rules.windows:
        # A window opened yesterday may still be open after midnight.
        for day in (now.date() - timedelta(days=1), now.date()):
            span = window.spans(day)
            if span and span[0] <= now < span[1]:
                return window, span[0], span[1]
    return None


def allowed(rules: Rules, now: datetime) -> bool:
    if freeze_at(rules, now) is not None:
        return False
    return not rules.windows or window_at(rules, now) is not None


def next_allowed(rules: Rules, now: datetime) -> datetime | None:
    """The first moment at or after `now` when a change is allowed; None within a year."""
    if allowed(rules, now):
        return now
    candidates: list[datetime] = [f.end for f in rules.freezes if f.end > now]
    day = now.date() - timedelta(days=1)
    while datetime.combine(day, time(), tzinfo=UTC) <= now + _HORIZON:
        for window in rules.windows:
            span = window.spans(day)
            if span and span[1] > now:
                candidates.append(max(span[0], now))
        day += timedelta(days=1)
    for moment in sorted(candidates):
        if moment <= now + _HORIZON and allowed(rules, moment):
            return moment
    return None


def check_window(
    config: HasWindows,
    environment: str,
    now: datetime,
    *,
    outside_window: str | None = None,
    operation: str = "deploy",
) -> str | None:
    """Allow a change of `environment` at `now`, or raise OutsideWindow naming the next allowed
    time. With `outside_window` (the reason) a change outside the windows goes on: the returned
    note says so, for the release record and the report. Returns None inside a window."""
    rules = rules_for(config, environment)
    if allowed(rules, now):
        return None
    reason = (outside_window or "").strip()
    frozen = freeze_at(rules, now)
    why = frozen.describe() if frozen else "outside its deploy windows (" + _listed(rules) + ")"
    if reason:
        return f"{operation} at {_fmt(now)}, {why}: allowed with --outside-window: {reason}"
    following = next_allowed(rules, now)
    when = f"next allowed {_fmt(following)}" if following else "no allowed time within a year"
    raise OutsideWindow(
        f"{operation} to {environment} refused at {_fmt(now)}: {why}; {when}",
        untouched=f"nothing was done to {environment}",
        hint='wait until then, or pass --outside-window "REASON" (recorded in the release record '
        "and the report); rollback is never blocked",
        facts={
            "environment": environment,
            "now": now.isoformat(),
            "next_allowed": following.isoformat() if following else None,
            "freeze": frozen.describe() if frozen else None,
            "windows": [w.text for w in rules.windows],
        },
    )


def _listed(rules: Rules) -> str:
    return ", ".join(w.text for w in rules.windows) + " UTC"


def describe(rules: Rules) -> Iterable[str]:
    """Human lines for `config check` and the report."""
    for w in rules.windows:
        yield f"window {w.text} UTC"
    for f in rules.freezes:
        yield f.describe()
