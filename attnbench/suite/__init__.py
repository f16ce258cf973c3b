"""A suite file: YAML with lines -> validated Suite -> list of Case; its schema."""
