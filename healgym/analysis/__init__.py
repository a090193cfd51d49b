"""Analyst tools: read a decision log into pandas, the report, offline datasets from the log,
and replaying a log's incidents in the simulator (docs/analysis.md)."""

from healgym.analysis.log import Filters, LogError, LogFrames, load_log

__all__ = ["Filters", "LogError", "LogFrames", "load_log"]
