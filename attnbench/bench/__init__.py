"""Measurement: timing, memory, the per-case worker and the sweep runner."""
