"""One exception hierarchy for healgym.

Every message says what failed, the value seen, where (file, row, column, config key) and how to
fix it. ``raise`` these for bad user input; never ``assert``.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar


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


class Stopped(ServingError, RuntimeError):
    """The kill switch is present or the adapter is paused: nothing is executed, a human's
    approval or override included (423 Locked)."""

    status = 423


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


#: The roles of the default pipeline, which the shipped runbooks and scenario files speak of.
DEFAULT_ROLES = ("ingest", "features", "train", "serve", "deliver")


def role_hint(stage: str, stages: Iterable[str]) -> str:
    """When ``stage`` is a default role the pipeline does not have, how to bind roles."""
    if stage not in DEFAULT_ROLES:
        return ""
    return (f" This pipeline's stages are the dataset's entities ({list(stages)[:8]}...); bind "
            f"the roles the shipped runbooks and scenario files speak of to entities: a preset "
            f"(telemetry=nezha_ob, nezha_tt, petshop or nab) or telemetry.stages={{{stage}: "
            f"<entity>, ...}} (env: stages={{'{stage}': '<entity>', ...}}).")


# --------------------------------------------------------------------------- one error path
def explain(exc: BaseException) -> str | None:
    """One line for a user's mistake (a :class:`HealgymError`, or one of the common ones: a
    missing file, an empty CSV, an unreachable adapter, a registry name or version that does
    not exist, a pickled array in a policy file); None for anything else (a bug: traceback)."""
    if isinstance(exc, HealgymError):
        return str(exc)
    name = type(exc).__name__
    mod = type(exc).__module__
    if isinstance(exc, FileNotFoundError):
        return f"no such file or folder: {exc.filename or exc}"
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename}: is a folder, a file was expected"
    if name == "EmptyDataError" and mod.startswith("pandas"):
        return f"an empty CSV file (no header or no rows): {exc}; export the data again"
    if mod.startswith("requests") and name in ("ConnectionError", "ConnectTimeout"):
        url = getattr(getattr(exc, "request", None), "url", None) or ""
        return (f"cannot reach {url or 'the server'}: is `healgym serve` running there "
                "(check --url and the serve config's api.host/api.port)?")
    if mod.startswith("mlflow") and name in ("MlflowException", "RestException"):
        code = getattr(exc, "error_code", "")
        if "RESOURCE_DOES_NOT_EXIST" in str(code) or "not found" in str(exc).lower():
            return (f"MLflow registry: {getattr(exc, 'message', exc)}; list what exists with "
                    "`mlflow models` / the MLflow UI, or check the name@alias")
    if isinstance(exc, ValueError) and "allow_pickle" in str(exc):
        return ("a policy file holds pickled objects, which healgym never loads (they can run "
                "code): re-export the policy with this version's experiments/train.py")
    return None


F = TypeVar("F", bound=Callable[..., Any])


def user_errors(prog: str) -> Callable[[F], F]:
    """Wrap an entry point (a CLI's main or a Hydra task function): a user's mistake
    (:func:`explain`) prints one line ``<prog>: error: ...`` on stderr and exits with code 2,
    no traceback; ``HEALGYM_DEBUG=1`` (or a CLI's ``--debug``) shows it."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - sorted below: user mistake or bug
                message = explain(exc)
                if message is None:
                    raise
                if os.environ.get("HEALGYM_DEBUG", "") not in ("", "0"):
                    traceback.print_exc()
                print(f"{prog}: error: {message}", file=sys.stderr)
                raise SystemExit(2) from None

        return run  # type: ignore[return-value]

    return wrap
