"""One exception hierarchy for healgym.

Every message says what failed, the value seen, where (file, row, column, config key) and how to
fix it. ``raise`` these for bad user input; never ``assert``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HealgymError(Exception):
    """Base class of every error healgym raises on purpose."""


class TelemetryFormatError(HealgymError):
    """A telemetry dataset folder is missing, malformed or of an unknown format version."""


class ImportFailed(HealgymError):
    """An importer could not read its source: names the file, row, column and what was expected."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        value: object = None,
        expected: str | None = None,
        fix: str | None = None,
    ) -> None:
        parts = [message]
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        if where:
            parts.append("at " + ", ".join(where))
        if value is not None:
            parts.append(f"value seen: {value!r}")
        if expected is not None:
            parts.append(f"expected: {expected}")
        if fix is not None:
            parts.append(f"fix: {fix}")
        super().__init__("; ".join(parts))
        self.file, self.row, self.column, self.value = file, row, column, value


class ConfigError(HealgymError):
    """A mapping file, scenario file or environment argument is invalid."""


class ServingError(HealgymError):
    """A request to the serving adapter cannot be carried out (mapped to an HTTP status in one
    place, :mod:`healgym.serving.api`)."""

    status = 400


class UnknownDecision(ServingError, KeyError):
    """No decision has this id."""

    status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotPending(ServingError, LookupError):
    """The decision is not waiting for a human (already approved, rejected or acted)."""

    status = 409


class InvalidAction(ServingError, ValueError):
    """The action, operator or reason of a request is not acceptable."""

    status = 422


class ActuatorError(HealgymError):
    """An actuator could not carry out an action."""


class CannotAct(ActuatorError):
    """The actuator cannot do this action on this target (a configuration fact, never retried):
    no spec for the stage, an action kind it does not carry out, nothing older to roll back to."""


class TransientActuatorError(ActuatorError):
    """A failure worth retrying (the actuator says the outcome may differ next time)."""


def reject_unknown_keys(keys: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise ConfigError for the first key not in ``known``: '<where>: unknown key 'x'. Did you
    mean "y"? Known keys: [...]'."""
    known = sorted(known)
    for key in keys:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(str(key), known)} "
                              f"Known keys: {known}")


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f' Did you mean "{close[0]}"?' if close else ""
