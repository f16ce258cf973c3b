"""Where units of work run: a local worker pool, one worker per device, Ray tasks."""
