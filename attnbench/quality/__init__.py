"""Quality: how far each mechanism is from softmax attention (``approx``) and what
it can still learn (``mqar``); ``plan`` turns a suite's ``quality:`` section into
measurements, ``summary`` their records into tables.

This module imports nothing heavy: the suite schema reads its names."""

from __future__ import annotations

#: the quality measures a suite may ask for
MEASURES = ("approx", "mqar")
#: the input regimes of the approximation error (see approx.make_inputs)
REGIMES = ("gaussian", "peaked")
#: the status of a mechanism that does not approximate softmax attention
NOT_AN_APPROXIMATION = "not an approximation"
