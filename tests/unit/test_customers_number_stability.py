"""How stable normalise_number's canonical numbers are when normalised again.

A canonical number is digits only, and bare digits are read as a national number: a foreign
number whose canonical digits look national (with default country 86, "+1 312 555 0100" ->
"13125550100", which is also how a Chinese mobile is written) reads as another number when
normalised again, so stored canonical numbers are matched as they are, never normalised again
(CustomerRepository.find_by_normalised, CallRepository.list_calls(caller_normalised=...)).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from callcenter.customers.service import normalise_number

COUNTRIES = ("86", "1", "39", "44", "852")
written = st.text(alphabet="0123456789+ -()", max_size=20)


@pytest.mark.parametrize(
    ("raw", "country", "canonical", "read_as_national"),
    [
        ("+1 312 555 0100", "86", "13125550100", "8613125550100"),
        ("001 312 555 0100", "86", "13125550100", "8613125550100"),
        ("+69 100 000 35", "1", "6910000035", "16910000035"),
    ],
)
def test_a_foreign_number_can_read_as_a_national_one(
    raw: str, country: str, canonical: str, read_as_national: str
) -> None:
    assert normalise_number(raw, country) == canonical
    assert normalise_number(canonical, country) == read_as_national
    assert normalise_number("+" + canonical, country) == canonical


@given(written, st.sampled_from(COUNTRIES))
@example("+ 17-90219(2094", "86")
@example("(+-19979260463", "86")
@example("0 27 ", "86")
def test_a_canonical_number_is_stable_as_it_was_written(raw: str, country: str) -> None:
    once = normalise_number(raw, country)
    if not once:
        return
    if "+" not in raw and "00" not in raw.replace(" ", "").replace("-", ""):
        # written as a national number: normalising again changes nothing
        assert normalise_number(once, country) == once
    else:  # written as an international one: stable when written with "+" again
        assert normalise_number(once, country) == once or (
            normalise_number("+" + once, country) == once
        )


@given(st.text(max_size=30), st.sampled_from(COUNTRIES))
def test_normalising_again_reads_either_as_national_or_as_international(
    raw: str, country: str
) -> None:
    once = normalise_number(raw, country)
    if once:
        assert once in (normalise_number(once, country), normalise_number("+" + once, country))
