"""chrono's round trip of the agent's times (sessiond.agentfiles.chrono), as the agent's
listing prints them: parsed into `DateTime<Utc>`, printed with `AutoSi` and `Z`."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sessiond.agentfiles import chrono
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


# --- the fast path: text already as chrono prints it is returned after one match -------------

_CANONICAL_TEXTS = [
    "2026-08-01T14:00:00Z",
    "2026-08-01T14:02:07.500Z",
    "2026-08-01T14:00:00.001200Z",
    "2026-08-01T13:59:31.123456789Z",
    "2026-08-01T13:59:31.123000001Z",
    "0000-01-01T00:00:00.000000001Z",
    "9999-12-28T23:59:59.999999999Z",
    "2026-02-28T23:59:59.010Z",
]


@pytest.mark.parametrize("text", _CANONICAL_TEXTS)
def test_canonical_text_skips_the_computation(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert chrono._normalize_full(text) == text  # it is its own round trip
    monkeypatch.setattr(chrono, "_normalize_full", _must_not_run)
    assert normalize_time(text) is text


@pytest.mark.parametrize(
    "text",
    [
        "2026-08-29T14:00:00Z",  # days past 28 need the month's length
        "2024-02-29T14:00:00Z",
        "2026-08-01T14:00:00.000Z",  # fraction digits chrono would not print
        "2026-08-01T14:00:00.5Z",
        "2026-08-01T14:00:00.123000Z",
        "2026-08-01T14:00:00.1234Z",
        "2026-08-01T14:00:00+00:00",
        "2026-08-01t14:00:00Z",
        "2026-08-01 14:00:00Z",
        "2026-08-01T14:00:00z",
        "2016-12-31T23:59:60Z",  # a leap second
        "2026-08-01T14:00:00Z\n",
        "\uff12\uff10\uff12\uff16-08-01T14:00:00Z",  # not ASCII digits
    ],
)
def test_other_text_takes_the_full_path(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    full = chrono._normalize_full

    def spy(arg: str) -> str | None:
        seen.append(arg)
        return full(arg)

    monkeypatch.setattr(chrono, "_normalize_full", spy)
    assert normalize_time(text) == full(text)
    assert seen == [text]


def _must_not_run(text: str) -> str | None:
    raise AssertionError(f"full computation for {text!r}")


_YEARS = (0, 1, 1900, 1970, 2000, 2023, 2024, 2100, 9999)
_FRACTIONS = ("", ".", ".0", ".5", ".50", ".500", ".000", ".1234", ".12345", ".123456")
_FRACTIONS += (".123000", ".000000", ".000001", ".1234567", ".12345678", ".123456789")
_FRACTIONS += (".123456000", ".000000000", ".000000001", ".1234567890", ".000000000001")
_ZONES = ("Z", "z", "+00:00", "-00:00", "+01:30", "-23:59", "+24:00", "")


def test_fast_path_agrees_on_every_day_of_every_month() -> None:
    """Days 0-32 of months 0-13 in leap, non-leap and century years, with many fractions:
    Feb 29 only in leap years, day 31 only in 31-day months, nothing past the month."""
    for year in _YEARS:
        for month in range(14):
            for day in range(33):
                for fraction in _FRACTIONS:
                    _assert_agrees(f"{year:04d}-{month:02d}-{day:02d}T12:34:56{fraction}Z")
            _assert_agrees(f"{year:04d}-{month:02d}-15T12:34:56+01:00")


def test_fast_path_agrees_on_every_time_of_day() -> None:
    for hour in range(26):
        for minute in (0, 9, 10, 59, 60, 61, 99):
            for second in (0, 9, 10, 59, 60, 61, 99):
                for zone in _ZONES:
                    _assert_agrees(f"2024-12-31T{hour:02d}:{minute:02d}:{second:02d}.5{zone}")
                    _assert_agrees(f"2024-12-31T{hour:02d}:{minute:02d}:{second:02d}{zone}")


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(min_value=0, max_value=9999),
    st.integers(min_value=0, max_value=13),
    st.integers(min_value=0, max_value=32),
    st.integers(min_value=0, max_value=24),
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=61),
    st.text(alphabet="0123456789", max_size=12),
    st.sampled_from(("T", "t", " ")),
    st.sampled_from(_ZONES),
)
def test_fast_path_agrees_on_generated_times(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    digits: str,
    separator: str,
    zone: str,
) -> None:
    fraction = f".{digits}" if digits else ""
    _assert_agrees(
        f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}"
        f"{fraction}{zone}"
    )


@settings(max_examples=1000, deadline=None)
@given(
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.integers(min_value=0, max_value=999_999_999),
    st.sampled_from((3, 6, 9)),
)
def test_fast_path_agrees_on_canonical_times(moment: dt.datetime, nanos: int, width: int) -> None:
    """Times as the agent writes them (the fast path's case), at every fraction width."""
    digits = f"{nanos:09d}"[:width]
    text = f"{_seconds(moment)}.{digits}Z"
    _assert_agrees(text)
    _assert_agrees(_seconds(moment) + "Z")


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="0123456789-:.TtZz+ \n٣", max_size=32))
def test_fast_path_agrees_on_any_text(text: str) -> None:
    _assert_agrees(text)


def _assert_agrees(text: str) -> None:
    expected = chrono._normalize_full(text)
    assert normalize_time(text) == expected, text
    if chrono._is_canonical(text) is not None:
        assert expected == text, text  # the fast path only takes its own round trips
