"""Flywheel: entry points (CLI) and the one Settings object."""
