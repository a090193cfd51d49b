"""Importers: turn a source's telemetry into a canonical dataset folder.

``import_source(FORMAT, SRC)`` reads the mapping ``configs/importers/FORMAT.yaml`` (or a YAML
path), dispatches on its ``reader`` and returns a :class:`TelemetryDataset`. Readers:

* ``table``: flat CSV/Parquet files, wide (one column per metric) or long (metric, value); all
  of it described by the YAML, so a new format of this shape needs no code.
* ``nezha``, ``petshop``, ``nab``: the layouts of the three public datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from healgym.errors import ConfigError
from healgym.telemetry.dataset import TelemetryDataset
from healgym.telemetry.importers import nab, nezha, petshop, table
from healgym.telemetry.mapping import load_mapping

READERS: dict[str, Callable[[dict, Path], TelemetryDataset]] = {
    "table": table.read,
    "nezha": nezha.read,
    "petshop": petshop.read,
    "nab": nab.read,
}


def import_source(fmt: str, src: str | Path) -> TelemetryDataset:
    """Import ``src`` with the mapping named (or located) by ``fmt``."""
    mapping = load_mapping(fmt)
    reader = READERS.get(mapping["reader"])
    if reader is None:
        raise ConfigError(f"{mapping['_path']}: reader {mapping['reader']!r} is unknown; "
                          f"readers: {sorted(READERS)}")
    src = Path(src)
    if not src.exists():
        raise ConfigError(f"source {src} does not exist")
    return reader(mapping, src)


__all__ = ["READERS", "import_source"]
