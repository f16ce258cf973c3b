"""What the results say: against a baseline, scaling and crossovers, two runs,
agreement with a paper, quality."""
