"""The command line: the Typer app, its outputs, error boundary, help, consoles."""
