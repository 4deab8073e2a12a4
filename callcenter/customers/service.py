"""Customer decisions that need no I/O: phone-number normalisation.

`normalise_number` turns any way a person or a PBX writes a number into one canonical digit string,
so "+86 138-0013-8000", "13800138000", "008613800138000" and "86 138 0013 8000" all become
"8613800138000" (E.164 without the "+"). Numbers too short to carry an area code (internal
extensions such as "1001", service numbers such as "95588", local numbers without an area code)
are kept as their digits: there is no country to add without guessing.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["InvalidNumberError", "normalise_number", "parse_number"]

# What Asterisk and carriers put in CALLERID(num) when the number is withheld or unknown.
_ANONYMOUS = frozenset(
    {
        "",
        "unknown",
        "<unknown>",
        "anonymous",
        "restricted",
        "private",
        "unavailable",
        "withheld",
        "blocked",
        "null",
        "none",
    }
)
# Characters people use to group digits: spaces, dashes, dots, slashes, parentheses.
_SEPARATORS = re.compile(r"[\s\-./()\[\]]+")
# "+44 (0)20 ..." - a national trunk prefix written inside an international number.
_TRUNK_IN_PARENS = re.compile(r"\(\s*0\s*\)")
_SCHEME = re.compile(r"^(?:tel|sips?):", re.IGNORECASE)
_CN_MOBILE = re.compile(r"1[3-9]\d{9}")
# Countries whose national numbers keep their leading 0 after the country code (Italy & co).
_KEEPS_LEADING_ZERO = frozenset({"39", "378", "379"})
_MAX_E164_DIGITS = 15
# A national number written with its trunk "0" has at least an area code plus a subscriber
# number; anything shorter is an extension or a service code and is left alone.
_MIN_TRUNK_NATIONAL_DIGITS = 10


class InvalidNumberError(ValueError):
    """The text is not a telephone number (raised by `parse_number`)."""


def normalise_number(raw: str, default_country: str = "86") -> str:
    """Canonical digits for `raw`, or "" when it is not a usable number.

    - international forms ("+86 ...", "0086 ...", "86 138 ...") -> country code + national number
    - national forms ("138 0013 8000", "010-12345678", "(0)138...") -> `default_country` prepended,
      the trunk "0" dropped (except for countries that keep it)
    - short numbers (extensions "1001", service numbers "95588", local numbers without an area
      code) -> their digits unchanged
    - withheld / anonymous / empty / text with letters / longer than E.164 allows -> ""

    The result is a key, not a way of writing a number: store it and match it as it is, never
    normalise it again. A result from a national form is stable, but bare digits read as a
    national number, so a foreign number whose digits look national changes when normalised
    again ("+1 312 555 0100" -> "13125550100", and "13125550100", a Chinese mobile, ->
    "8613125550100"); written with "+" again, every international result is stable.
    """
    if not default_country.isascii() or not default_country.isdigit():
        raise ValueError(f"default_country must be digits, got {default_country!r}")
    text = unicodedata.normalize("NFKC", raw).strip()
    if text.casefold() in _ANONYMOUS:
        return ""
    text = _SCHEME.sub("", text)
    text = text.split("@", 1)[0].split(";", 1)[0]  # sip:1001@pbx;user=phone -> 1001
    text = _TRUNK_IN_PARENS.sub("", text)
    text = _SEPARATORS.sub("", text)
    international = False
    if text.startswith("+"):
        international = True
        text = text[1:]
    if not text or not all("0" <= ch <= "9" for ch in text):
        return ""
    if not international and text.startswith("00") and len(text) > 4:
        international = True
        text = text[2:]
    digits = _canonical(text, international=international, country=default_country)
    if len(digits) > _MAX_E164_DIGITS:
        return ""
    return digits


def parse_number(raw: str, default_country: str = "86") -> str:
    """Like `normalise_number`, but raises `InvalidNumberError` instead of returning ""."""
    digits = normalise_number(raw, default_country)
    if not digits:
        raise InvalidNumberError(f"not a telephone number: {raw!r}")
    return digits


def _canonical(digits: str, *, international: bool, country: str) -> str:
    if international:
        if digits.startswith("0"):
            return ""  # no country code starts with 0
        rest = digits[len(country) :]
        # "+86 010 1234 5678": the trunk 0 does not belong after a country code.
        if (
            digits.startswith(country)
            and rest.startswith("0")
            and not rest.startswith("00")
            and country not in _KEEPS_LEADING_ZERO
            and len(rest) >= _MIN_TRUNK_NATIONAL_DIGITS - 1
        ):
            return country + rest[1:]
        return digits
    if digits.startswith("0") and len(digits) >= _MIN_TRUNK_NATIONAL_DIGITS:
        national = digits if country in _KEEPS_LEADING_ZERO else digits[1:]
        return country + national
    if country == "86":
        if _CN_MOBILE.fullmatch(digits):
            return country + digits
        if digits.startswith(country) and len(digits) >= 12:
            return digits
    elif country == "1" and len(digits) == 10 and digits[0] in "23456789":
        # North American numbers are dialled nationally as 10 digits without a trunk prefix.
        return country + digits
    return digits
