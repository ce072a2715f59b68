"""Errors a user can act on.

Every error raised for bad input names *what* is wrong, *where* (a file, a key, a
parameter) and *how to fix it*.  The CLI prints the message and exits non-zero
without a traceback; Python users can catch :class:`MMSegError`.
"""

from __future__ import annotations

from pathlib import Path


class MMSegError(Exception):
    """Base class: a problem the user can fix.

    Parameters
    ----------
    problem
        What is wrong, in one sentence.
    fix
        What the user should do about it.
    where
        The file, key or parameter concerned (optional).
    """

    def __init__(self, problem: str, *, fix: str, where: str | Path | None = None) -> None:
        self.problem = problem
        self.fix = fix
        self.where = str(where) if where is not None else None
        prefix = f"{self.where}: " if self.where else ""
        super().__init__(f"{prefix}{problem}\n  fix: {fix}")


class InputError(MMSegError, ValueError):
    """Unreadable, unsupported or physically meaningless input data."""


class ParameterError(MMSegError, ValueError):
    """A parameter or config value that cannot work."""


class WeightsError(MMSegError, RuntimeError):
    """Encoder weights missing, not downloadable, or of the wrong layout."""


class OutputError(MMSegError, OSError):
    """The output location cannot be written."""
