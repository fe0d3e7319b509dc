"""Labeling: the engine behind ``falv label`` (``falv.label(...)``), the record
schema, temporal segments and the exporters to labeling tools' formats."""
