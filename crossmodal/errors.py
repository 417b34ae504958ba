"""The errors a user can cause, as one family.

The command line turns a :class:`CrossmodalError` into one line on stderr and exit
code 2; anything else is a bug and keeps its traceback. Each subclass also derives from
the builtin a caller would expect (``ValueError``, ``FileNotFoundError``), so code that
catches those keeps working.
"""
from __future__ import annotations


class CrossmodalError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidInput(CrossmodalError, ValueError):
    """A bad argument, file or value."""


class MissingInput(CrossmodalError, FileNotFoundError):
    """A file or folder that should be there is not."""


class UnsafeOutput(CrossmodalError, ValueError):
    """Writing where asked would destroy something the command does not own."""


class NothingDone(CrossmodalError):
    """The command had nothing to do (no readable input); nothing was written."""


class MissingField(CrossmodalError, KeyError):
    """A column, split or field the input should have is not there."""


class Unavailable(CrossmodalError, RuntimeError):
    """Something needed cannot be loaded or reached: weights, an optional package, a server."""
