"""User-facing errors: each message is one line saying what is wrong and how to fix it; the
commands' argument parser, whose usage errors are one line too."""

import argparse


class KdrayError(Exception):
    """An error the user can fix; the CLI prints it as one line and exits with code 2."""


class ConfigError(KdrayError, ValueError):
    """A configuration value is invalid."""


class LossShapeError(KdrayError, ValueError):
    """Tensors given to a loss do not fit each other (the message names both shapes)."""


class TrackingUnreachableError(KdrayError):
    """The MLflow tracking server did not answer; what the study did is kept for --resume."""


EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse for kdray's commands: a usage error is one line on stderr and exit code 2, not
    the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")
