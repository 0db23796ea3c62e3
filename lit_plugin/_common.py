"""What the interpreters and generators share: reading LIT config fields, each checked and
named in its error."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from lit_nlp.api import types as lit_types

from captum_erasure._core.inputs import check_positive_int
from captum_erasure._core.text import UNITS


def config_choice(config: dict, key: str, choices: Sequence[str], default: str) -> str:
    value = config.get(key, default)
    if value in (None, ""):
        return default
    if value not in choices:
        raise ValueError(f"{key!r} must be one of {list(choices)}, got {value!r}")
    return str(value)


def config_number(config: dict, key: str, default: float, kind: Callable = float) -> Any:
    """A finite number from a config field; anything else is an error naming the field."""
    if kind is int:
        return config_integer(config, key, default)
    value = config.get(key, default)
    if value in (None, ""):
        return default
    try:
        number = kind(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise ValueError(f"{key!r} must be a number, got {value!r}")
    return number


def config_integer(config: dict, key: str, default: int | None, *,
             empty_is_none: bool = False) -> int | None:
    """A positive integer from a config field (a number or its text: LIT's controls and API
    requests send either). 2.5, inf, nan, abc, 0 and -1 are errors naming the field; only an
    empty value means ``default`` (``None``, "no limit", when ``empty_is_none``)."""
    value = config.get(key, default)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None if empty_is_none else default
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = text
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        number = int(number)  # JSON may send 3.0 for 3
    return check_positive_int(repr(key), number)


# What a word is, in every row and generator: the tokenizer's words or whitespace tokens.
UNITS_KEY = "Units (words: tokenizer words; whitespace: whitespace tokens)"


def units_field(default: str) -> Any:
    """The config field choosing the erasable units (``captum_erasure._core.text.UNITS``)."""
    return lit_types.CategoryLabel(vocab=list(UNITS), default=default, required=False)


def config_units(config: dict, default: str) -> str:
    return config_choice(config, UNITS_KEY, UNITS, default)
