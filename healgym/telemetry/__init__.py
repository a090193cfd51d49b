"""Telemetry datasets: the canonical, versioned format, importers and a synthetic generator."""

from healgym.telemetry.dataset import FORMAT_VERSION, TelemetryDataset, load_dataset
from healgym.telemetry.schema import CANONICAL_METRICS
from healgym.telemetry.synthetic import generate_synthetic

__all__ = [
    "CANONICAL_METRICS",
    "FORMAT_VERSION",
    "TelemetryDataset",
    "generate_synthetic",
    "load_dataset",
]
