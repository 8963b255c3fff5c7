"""``self-optimiser``: the command line. The one place that configures logging."""

from worker.cli.main import loop_factory, main

__all__ = ["loop_factory", "main"]
