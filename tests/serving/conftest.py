"""Fixtures of the serving tests."""

from tests.serving.common import stand_in  # noqa: F401  (a fixture)
