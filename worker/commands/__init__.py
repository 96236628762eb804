"""Top-level CLI commands that are not operator tools."""
