"""``self-optimiser``: the command line. The one place that configures logging."""

from worker.cli.commands import loop_factory
from worker.cli.main import main

__all__ = ["loop_factory", "main"]
