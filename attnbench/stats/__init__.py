"""Statistics that decide verdicts: samples, paired ratios, two runs.

The bottom layer: imports nothing else of attnbench."""
