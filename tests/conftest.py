from __future__ import annotations

import os
from pathlib import Path

import hypothesis.internal.observability  # noqa: F401  (see below)
import pytest

# hypothesis's pytest plugin imports this lazily in the terminal summary; after Ray Data has run
# in the process, CPython 3.11.7's parser then fails ("AST constructor recursion depth
# mismatch") while pytest rewrites the module. Importing it up front avoids the late parse.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# The env calls its compiled kernels through cached entry points; in the tests every call also
# checks that the argument types are still those the entry point was compiled for.
os.environ.setdefault("HEALGYM_CHECK_DISPATCH", "1")

SHARED_DATA = Path(os.environ.get("HEALGYM_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The third-party telemetry in ../shared/data; tests that need it skip when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real telemetry not found at {SHARED_DATA} (CI and developer machines have "
                    "it; see the guide's Data section)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """CLI tests call healgym's main(), whose logging.basicConfig binds a handler to the
    captured stderr of that test; drop it afterwards, or later tests log into a closed file."""
    import logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in before:
            root.removeHandler(h)
    root.setLevel(level)
