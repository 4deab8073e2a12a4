"""normalise_number: every way of writing a number maps to one canonical digit string."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.customers.service import InvalidNumberError, normalise_number, parse_number

MOBILE = "8613800138000"


@pytest.mark.parametrize(
    "raw",
    [
        "+86 138-0013-8000",
        "13800138000",
        "008613800138000",
        "86 138 0013 8000",
        "(0)138 0013 8000",
        "+86 (0)138 0013 8000",
        "+86.138.0013.8000",
        "  138 0013 8000  ",
        "tel:+8613800138000",
        "sip:13800138000@pbx.example;user=phone",
        "＋８６ １３８ ００１３ ８０００",  # full-width, as typed with a Chinese IME
    ],
)
def test_mobile_formats_agree(raw: str) -> None:
    assert normalise_number(raw) == MOBILE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("010-12345678", "861012345678"),
        ("(010) 1234 5678", "861012345678"),
        ("+86 10 1234 5678", "861012345678"),
        ("+86 010 1234 5678", "861012345678"),
        ("0086-10-12345678", "861012345678"),
        ("0571-8765-4321", "8657187654321"),
        ("0755 2661 2345", "8675526612345"),
        ("0371-1234567", "863711234567"),
    ],
)
def test_landlines_with_area_codes(raw: str, expected: str) -> None:
    assert normalise_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1001", "1001"),  # internal extension
        ("8000", "8000"),
        ("95588", "95588"),  # bank service number
        ("10086", "10086"),
        ("110", "110"),
        ("12345678", "12345678"),  # local number, area code unknown: left alone
        ("0", "0"),  # operator shortcut
    ],
)
def test_short_numbers_stay_as_they_are(raw: str, expected: str) -> None:
    assert normalise_number(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "<unknown>",
        "unknown",
        "Anonymous",
        "RESTRICTED",
        "private",
        "abc",
        "*97",
        "+",
        "+0123456",
        "1" * 16,
    ],
)
def test_not_a_number_gives_empty(raw: str) -> None:
    assert normalise_number(raw) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 (0)20 7946 0000", "442079460000"),
        ("0044 20 7946 0000", "442079460000"),
        ("+1 (212) 555-0122", "12125550122"),
        ("+852 2345 6024", "85223456024"),
    ],
)
def test_foreign_numbers(raw: str, expected: str) -> None:
    assert normalise_number(raw) == expected


def test_other_default_countries() -> None:
    assert normalise_number("020 7946 0000", default_country="44") == "442079460000"
    assert normalise_number("(212) 555-0122", default_country="1") == "12125550122"
    assert normalise_number("06 1234 5678", default_country="39") == "390612345678"
    with pytest.raises(ValueError):
        normalise_number("123", default_country="+86")


def test_parse_number_raises_for_non_numbers() -> None:
    assert parse_number("138 0013 8000") == MOBILE
    with pytest.raises(InvalidNumberError):
        parse_number("anonymous")


# --- properties -------------------------------------------------------------------------------

mobiles = st.builds(
    lambda second, rest: f"1{second}{rest}",
    st.sampled_from("3456789"),
    st.text(alphabet="0123456789", min_size=9, max_size=9),
)
area_codes = st.one_of(
    st.just("10"),
    st.builds(lambda d: f"2{d}", st.sampled_from("0123456789")),
    st.builds(
        lambda a, b: f"{a}{b}",
        st.sampled_from("3456789"),
        st.text(alphabet="0123456789", min_size=2, max_size=2),
    ),
)
subscribers = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("23456789"),
    st.text(alphabet="0123456789", min_size=6, max_size=7),
)
separators = st.sampled_from(["", " ", "-", ".", "  "])


def group(digits: str, sep: str, size: int) -> str:
    return sep.join(digits[i : i + size] for i in range(0, len(digits), size))


@given(
    mobiles,
    separators,
    st.sampled_from(["", "+86", "0086", "86", "+86(0)"]),
    st.integers(min_value=3, max_value=5),
)
def test_any_written_mobile_normalises_to_e164(
    mobile: str, sep: str, prefix: str, size: int
) -> None:
    raw = f"{prefix}{sep}{group(mobile, sep, size)}"
    assert normalise_number(raw) == "86" + mobile


@given(area_codes, subscribers, separators, st.sampled_from(["0", "+86", "0086", "+86 0"]))
def test_any_written_landline_normalises_to_e164(
    area: str, subscriber: str, sep: str, prefix: str
) -> None:
    raw = f"{prefix}{area}{sep}{subscriber}"
    assert normalise_number(raw) == "86" + area + subscriber


@given(st.text(max_size=40))
def test_never_crashes_and_yields_digits(raw: str) -> None:
    out = normalise_number(raw)
    assert out == "" or (out.isascii() and out.isdigit() and len(out) <= 15)


@given(
    st.one_of(
        mobiles,
        st.builds(lambda a, s: "0" + a + s, area_codes, subscribers),
        st.text(alphabet="0123456789", min_size=1, max_size=6),
    )
)
def test_normalising_is_stable_for_national_numbers(raw: str) -> None:
    once = normalise_number(raw)
    assert normalise_number(once) == once


@given(st.text(alphabet="0123456789 -()", max_size=25))
def test_international_results_are_stable(raw: str) -> None:
    # A bare digit string is ambiguous (national or international); "+" makes it international.
    once = normalise_number("+" + raw)
    if once:
        assert normalise_number("+" + once) == once
