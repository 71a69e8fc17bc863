"""argparse for kdray's commands (kdray.errors.OneLineParser): a usage error is one line on
stderr and exit code 2, not the usage block. Dependency-free so every command answers at once."""

from kdray.errors import EXIT_USAGE, OneLineParser

__all__ = ["EXIT_USAGE", "OneLineParser"]
