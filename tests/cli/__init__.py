"""The command line, one file per command (test_run.py is ``attnbench run``,
test_compare.py ``attnbench compare``, ...), plus test_help.py for help,
--version and completion, and test_boundary.py for the error boundary every
command shares (attnbench.cli.boundary)."""
