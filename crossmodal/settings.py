"""Numbers users set through the environment, each read and checked in one place: a
value that is not a number is one clear line naming the variable, at start-up (the
command line checks them all before any work), never a traceback deep in a run or a
photo skipped for a reason that has nothing to do with it."""
from __future__ import annotations

import os

from .errors import InvalidInput

#: variable -> (type, smallest value, what it sets, an example)
ENV_NUMBERS = {
    "CROSSMODAL_PROGRESS_INTERVAL": (float, 0.0, "seconds between progress lines in a log", "30"),
    "CROSSMODAL_MAX_PIXELS": (int, 1, "the largest image accepted, in pixels", "100000000"),
    "CROSSMODAL_LOCK_TIMEOUT": (float, 0.0, "seconds a writer waits for another one to finish", "3600"),
}


def env_number(name: str, default):
    """The variable's value, or ``default`` when it is unset or empty."""
    kind, minimum, what, example = ENV_NUMBERS[name]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or value != value:
        raise InvalidInput(f"{name}={raw!r} is not valid: it sets {what} and must be a "
                           f"{'whole ' if kind is int else ''}number >= {minimum} (e.g. {name}={example}); "
                           f"fix or unset it")
    return value


def check_environment() -> None:
    """Check every numeric variable (the command line calls this before any work)."""
    for name in ENV_NUMBERS:
        env_number(name, None)
