"""What a run leaves on disk: run.json, cases.jsonl, results.csv, visits merged
per case, runs merged from shards, and the papers' published tables."""
