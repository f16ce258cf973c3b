"""The report of a run computed once, rendered as terminal tables, markdown,
JSON and plots; the tables of two runs; the catalog of variants."""
