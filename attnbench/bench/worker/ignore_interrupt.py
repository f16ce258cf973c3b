"""Imported first by the fork server: Ctrl-C is the sweep's to handle (it
stops the workers and saves what finished), so the server ignores it from
here on, before it imports torch. Python's fork server ignores it only after
its preload, and a Ctrl-C during that import printed a traceback."""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
