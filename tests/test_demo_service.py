"""The demo service measures its own memory, not its parent's peak."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")
def test_memory_is_the_services_own_not_its_parents_peak():
    """Linux keeps ru_maxrss across exec: a service started by a process that once held 1 GB
    would read 1 GB and "run out of memory" at once (this broke the end-to-end test when its
    pytest worker had run RLlib first)."""
    ballast = bytearray(1_000_000_000)
    code = ("import resource; from healgym.demo.service import current_rss_mb; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, current_rss_mb())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    inherited_peak, now = map(float, out.stdout.split())
    assert inherited_peak > 900  # the parent's peak, inherited
    assert now < 400  # what the service itself holds
    del ballast
