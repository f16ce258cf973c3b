"""Measurement: measuring one case in a worker process, and the sweep that runs a suite's cases."""
