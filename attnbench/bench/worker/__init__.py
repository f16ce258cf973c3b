"""The worker: one process that builds, checks and measures cases."""
