"""chrono's round trip of the agent's times (sessiond.agentfiles.chrono), as the agent's
listing prints them: parsed into `DateTime<Utc>`, printed with `AutoSi` and `Z`."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sessiond.agentfiles.chrono import normalize_time


@pytest.mark.parametrize(
    ("written", "printed"),
    [
        ("2026-08-01T14:00:00Z", "2026-08-01T14:00:00Z"),
        ("2026-08-01T14:00:00.000Z", "2026-08-01T14:00:00Z"),  # a zero fraction is omitted
        ("2026-08-01T14:02:07.5Z", "2026-08-01T14:02:07.500Z"),
        ("2026-08-01T14:02:07.500Z", "2026-08-01T14:02:07.500Z"),
        ("2026-08-01T14:00:00.0012Z", "2026-08-01T14:00:00.001200Z"),
        ("2026-08-01T13:59:31.123456789Z", "2026-08-01T13:59:31.123456789Z"),
        ("2026-08-01T13:59:31.1234567Z", "2026-08-01T13:59:31.123456700Z"),
        ("2026-08-01T13:59:31.1234567891234Z", "2026-08-01T13:59:31.123456789Z"),  # cut at 9
        ("2026-08-01T13:59:31.123000001Z", "2026-08-01T13:59:31.123000001Z"),
        ("2026-08-01T16:00:00+02:00", "2026-08-01T14:00:00Z"),
        ("2026-08-01T16:00:00.25+02:30", "2026-08-01T13:30:00.250Z"),
        ("2026-08-01T00:30:00-01:00", "2026-08-01T01:30:00Z"),
        ("2026-08-01T00:30:00+01:00", "2026-07-31T23:30:00Z"),  # across a day
        ("2027-01-01T00:00:00+00:01", "2026-12-31T23:59:00Z"),  # across a year
        ("2024-03-01T00:10:00+00:30", "2024-02-29T23:40:00Z"),  # into a leap day
        ("2026-08-01T14:00:00-00:00", "2026-08-01T14:00:00Z"),
        ("2026-08-01t14:00:00z", "2026-08-01T14:00:00Z"),
        ("2026-08-01 14:00:00Z", "2026-08-01T14:00:00Z"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:60Z"),  # a leap second stays one
        ("2017-01-01T00:59:60.5+01:00", "2016-12-31T23:59:60.500Z"),
        ("9999-12-31T23:30:00-01:00", "+10000-01-01T00:30:00Z"),
        ("0000-01-01T00:30:00+01:00", "-0001-12-31T23:30:00Z"),
        ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
    ],
)
def test_normalize_time(written: str, printed: str) -> None:
    assert normalize_time(written) == printed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-08-01",
        "2026-08-01T14:00:00",  # no offset
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-13-01T00:00:00Z",
        "2026-08-32T00:00:00Z",
        "2026-08-01T24:00:00Z",
        "2026-08-01T14:60:00Z",
        "2026-08-01T14:00:61Z",
        "2026-08-01T14:00:00.Z",
        "2026-08-01T14:00:00+24:00",
        "2026-08-01T14:00:00+0200",
        "2026-08-01T14:00:00Z ",
        "26-08-01T14:00:00Z",
    ],
)
def test_normalize_time_refuses_what_chrono_refuses(text: str) -> None:
    assert normalize_time(text) is None


@given(
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    st.integers(min_value=0, max_value=999),
)
def test_normalize_time_agrees_with_python(moment: dt.datetime, offset_min: int, ns: int) -> None:
    zone = dt.timezone(dt.timedelta(minutes=offset_min))
    local = moment.replace(tzinfo=zone)
    sign = "+" if offset_min >= 0 else "-"
    hours, minutes = divmod(abs(offset_min), 60)
    text = _seconds(local) + f".{local.microsecond:06d}{ns:03d}"
    text += f"{sign}{hours:02d}:{minutes:02d}"
    utc = local.astimezone(dt.UTC)
    nanos = utc.microsecond * 1000 + ns
    if nanos == 0:
        fraction = ""
    elif nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}"
    elif nanos % 1000 == 0:
        fraction = f".{nanos // 1000:06d}"
    else:
        fraction = f".{nanos:09d}"
    assert normalize_time(text) == _seconds(utc) + fraction + "Z"


def _seconds(moment: dt.datetime) -> str:
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S")  # %Y does not pad
