"""Trace processing: settled traces become business transactions, time per tier
and per-minute rollups that everything downstream reads."""
