"""Which event times the fold takes: the lateness rule and the future rule. Pure.

- Future: an event stamped more than the allowed skew (`PERSONA_MAX_CLOCK_SKEW_SECONDS`, 300 s by
  default) ahead of the wall clock is refused as `future` and never moves the event-time clock:
  one event stamped in 2099 would otherwise make every later event of its partition "late".
- Late: an event more than the lateness bound (`PERSONA_LATENESS_DAYS`) behind the stream time of
  its own topic-partition is refused as `late`. Stream time is the newest event time folded from
  that topic-partition (`engine.fold`), never ahead of the wall clock (a time stored ahead of it by
  an earlier version counts as now).
"""

from __future__ import annotations


def admit(
    ts: int, stream_time: int | None, wall_ms: int, lateness_ms: int, skew_ms: int
) -> str | None:
    """None when the fold takes an event of time `ts`, else the dead-letter reason."""
    ahead = ts - wall_ms
    if ahead > skew_ms:
        reason = (
            f"future: {ahead / 1000:.0f} s ahead of the wall clock (bound {skew_ms / 1000:g} s)"
        )
        return reason + _offset_hint(ahead, skew_ms)
    if stream_time is None:
        return None
    behind = min(stream_time, wall_ms) - ts
    if behind > lateness_ms:
        return (
            f"late: {behind / 3_600_000:.1f} h behind the stream time of its topic-partition "
            f"(bound {lateness_ms / 86_400_000:g} days)"
        )
    return None


QUARTER_HOUR_MS = 900_000
MAX_OFFSET_MS = 14 * 3_600_000  # the furthest time zone from UTC (UTC+14)


def _offset_hint(ahead: int, skew_ms: int) -> str:
    """A hint when `ahead` is a time zone's offset (a whole number of quarter hours, up to 14 h,
    within the skew): local time written as UTC, or a local clock's epoch."""
    quarters = round(ahead / QUARTER_HOUR_MS)
    if not 0 < quarters * QUARTER_HOUR_MS <= MAX_OFFSET_MS:
        return ""
    if abs(ahead - quarters * QUARTER_HOUR_MS) > skew_ms:
        return ""
    hours = quarters / 4
    return (
        f"; {hours:g} h ahead is a time zone's offset: check the time zone (epoch milliseconds "
        "are UTC; an RFC 3339 time carries its own offset, e.g. +01:00, or Z for UTC)"
    )
