"""Checks of encoder options: each returns the option's clean value or raises ParameterError.

The message names the option, says what it must be and gives an example value,
so that a bad keyword of ``segment(..., encoder_options={...})`` is reported the
same way by every encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ParameterError


def check_int(value: Any, name: str, *, minimum: int, example: str) -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum``.

    Parameters
    ----------
    value
        The option's value; a ``bool`` is refused although it is an ``int``.
    name
        The option's name, for the message.
    minimum
        Smallest value allowed.
    example
        A good value, quoted in the fix (e.g. ``"64"``).

    Raises
    ------
    ParameterError
        Not an integer (``int`` or numpy integer), a bool, or below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(
            f"{name} must be an integer >= {minimum}, not {value!r}",
            fix=f"use e.g. {name}={example}",
            where=name,
        )
    return int(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` stripped and lower-cased if it is one of ``choices``.

    Parameters
    ----------
    value
        The option's value.
    name
        The option's name, for the message.
    choices
        Lower-case values allowed, the default first (the fix proposes it).

    Raises
    ------
    ParameterError
        Not a string, or not one of ``choices`` (case-insensitive).
    """
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in choices:
        raise ParameterError(
            f"{name}={value!r} is not one of {', '.join(map(repr, choices))}",
            fix=f"use {name}={choices[0]!r} (the default) or another listed value",
            where=name,
        )
    return text


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a ``bool`` if it is ``True`` or ``False`` (Python or numpy).

    Raises
    ------
    ParameterError
        Anything else, also ``0``, ``1`` and strings such as ``"yes"``.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(
            f"{name} must be True or False, not {value!r}", fix=f"use {name}=True", where=name
        )
    return bool(value)
