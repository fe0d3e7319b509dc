"""Labeling: records, temporal segments and exporters (the lead fills the public API)."""
