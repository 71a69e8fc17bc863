"""argparse for kdray's commands: a usage error is one line on stderr and exit code 2, not
the usage block. Dependency-free so every command answers at once."""

from __future__ import annotations

import argparse

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")
