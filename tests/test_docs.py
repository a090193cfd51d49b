"""The documentation's tables are the code's tables."""

from __future__ import annotations

from pathlib import Path

from healgym.sim import tables

ROOT = Path(__file__).resolve().parents[1]


def test_environment_doc_tables_match_the_code():
    doc = (ROOT / "docs" / "environment.md").read_text()
    for name, table in [("fault library", tables.fault_table()),
                        ("healing matrix", tables.healing_table()),
                        ("actions", tables.action_table()),
                        ("ambiguity", tables.ambiguity_table())]:
        assert table in doc, f"docs/environment.md: the {name} table is stale; regenerate it " \
                             "with `healgym faults --markdown`"


def test_readme_has_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
