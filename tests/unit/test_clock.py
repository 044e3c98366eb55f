"""vault.clock: the audit log's one timestamp spelling, and time as a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.clock import Clock, SystemClock, format_ts, parse_ts

KNOWN = datetime(2026, 11, 27, 17, 0, 0, 123456, tzinfo=UTC)
KNOWN_TEXT = "2026-11-27T17:00:00.123456Z"

# Years well inside 1000..9999 so that shifting by a UTC offset keeps four digits.
aware_datetimes = st.datetimes(
    min_value=datetime(1001, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    ),
)


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def test_format_known_moment():
    assert format_ts(KNOWN) == KNOWN_TEXT


def test_format_always_has_six_fraction_digits():
    assert format_ts(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"


def test_format_converts_other_offsets_to_utc():
    plus_one = timezone(timedelta(hours=1))
    moment = datetime(2026, 11, 27, 18, 0, 0, 123456, tzinfo=plus_one)
    assert format_ts(moment) == KNOWN_TEXT


def test_format_crosses_the_date_line():
    minus_five = timezone(timedelta(hours=-5))
    moment = datetime(2026, 12, 31, 22, 30, tzinfo=minus_five)
    assert format_ts(moment) == "2027-01-01T03:30:00.000000Z"


def test_parse_known_text():
    moment = parse_ts(KNOWN_TEXT)
    assert moment == KNOWN
    assert moment.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-27T17:00:00Z",  # no fraction
        "2026-11-27T17:00:00.123Z",  # milliseconds only
        "2026-11-27T17:00:00.1234567Z",  # seven digits
        "2026-11-27T17:00:00.123456",  # no zone
        "2026-11-27T17:00:00.123456z",  # lowercase z
        "2026-11-27T17:00:00.123456+00:00",  # offset spelling
        "2026-11-27 17:00:00.123456Z",  # space instead of T
        "2026-11-27t17:00:00.123456Z",
        " 2026-11-27T17:00:00.123456Z",
        "2026-11-27T17:00:00.123456Z ",
        "2026-11-27T17:00:00.123456Z\n",
        "2026-1-27T17:00:00.123456Z",  # strptime would accept one digit
        "2026-11-7T17:00:00.123456Z",
        "2026-11-27T7:00:00.123456Z",
        "+2026-11-27T17:00:00.123456Z",
        "2026-13-01T00:00:00.000000Z",
        "2026-02-30T00:00:00.000000Z",
        "2026-11-27T24:00:00.000000Z",
        "2026-11-27T17:60:00.000000Z",
        "2026-11-27T17:00:60.000000Z",  # no leap seconds
        "2026-11-27T17:00:00.12345xZ",
        "\uff12\uff10\uff12\uff16-11-27T17:00:00.123456Z",  # fullwidth digits
    ],
)
def test_parse_refuses_anything_but_the_canonical_form(text):
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract is ValueError
        parse_ts(text)


@given(aware_datetimes)
def test_format_parse_round_trip(moment):
    text = format_ts(moment)
    parsed = parse_ts(text)
    assert parsed == moment  # the same instant
    assert parsed.utcoffset() == timedelta(0)
    assert format_ts(parsed) == text
    assert len(text) == len(KNOWN_TEXT)


@given(aware_datetimes, aware_datetimes)
def test_text_order_is_time_order(a, b):
    """Fixed width and UTC: sorting the strings sorts the instants (the log relies on it)."""
    assert (format_ts(a) < format_ts(b)) == (a < b)


def test_system_clock_is_aware_utc():
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    parse_ts(format_ts(now))  # its moments spell canonically


def test_a_fixed_clock_is_a_clock():
    clock: Clock = FixedClock(KNOWN)
    assert format_ts(clock.now()) == KNOWN_TEXT
