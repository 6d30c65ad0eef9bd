"""Times as the agent prints them after a round trip through chrono.

The agent's listing parses `created_at`/`updated_at` into `DateTime<Utc>` and serializes them
again with `SecondsFormat::AutoSi` and `Z` (docs/agent-files.md, "Encoding"), so a time
written with an offset or another number of fraction digits comes back normalized. The listing
cache holds the normalized text; this module computes it without the clock or the time zone
database.
"""

from __future__ import annotations

import re

from sessionctl.agent import autosi_fraction, days_from_civil, days_in_month

_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII,  # chrono reads ASCII digits only; `\d` alone would take any script's
)
_SECONDS_PER_DAY = 86_400

# Text chrono prints unchanged: UTC, `T` and `Z`, a fraction of 3, 6 or 9 digits not ending in
# 000, and a day every month has (29-31 take the full path, which knows month lengths). The
# agent writes its times this way, so most calls end after this one match, ~10x faster than
# the full computation: the listing cache can then be recomputed instead of memoized.
# `[0-9]`, not `\d`: `\d` also matches other scripts' digits, which the full path rewrites.
_CANONICAL = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.(?:[0-9]{3}|[0-9]{6}|[0-9]{9})(?<!000))?Z"
)
_is_canonical = _CANONICAL.fullmatch


def normalize_time(text: str) -> str | None:
    """`text` parsed as chrono parses an RFC 3339 time and printed as chrono prints a
    `DateTime<Utc>`; None when chrono would refuse it."""
    if _is_canonical(text) is not None:
        return text  # already its own round trip
    return _normalize_full(text)


def _normalize_full(text: str) -> str | None:
    """`normalize_time` by computation, for any text (kept apart so tests can compare)."""
    match = _TIME.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    # chrono reads at most nine fraction digits and skips the rest.
    nanos = int((match.group(7) or "0")[:9].ljust(9, "0"))
    if not 1 <= month <= 12 or not 1 <= day <= days_in_month(year, month):
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    offset_s = 0
    if match.group(9):
        offset_h, offset_m = int(match.group(10)), int(match.group(11))
        if offset_h > 23 or offset_m > 59:
            return None
        offset_s = (offset_h * 3600 + offset_m * 60) * (1 if match.group(9) == "+" else -1)
    leap = second == 60  # chrono keeps a leap second as :59 plus a second of nanoseconds
    total = (
        days_from_civil(year, month, day) * _SECONDS_PER_DAY
        + hour * 3600
        + minute * 60
        + (59 if leap else second)
        - offset_s
    )
    days, rest = divmod(total, _SECONDS_PER_DAY)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    if leap:
        second = 60
    return (
        f"{_year(year)}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        f"{autosi_fraction(nanos)}Z"
    )


def _year(year: int) -> str:
    # chrono writes years outside 0..=9999 with a sign and at least four digits.
    return f"{year:04d}" if 0 <= year <= 9999 else f"{year:+05d}"


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day
