"""`--config FILE`: a study's flags as a YAML (or JSON) mapping, e.g.

    # my_study.yaml
    temperatures: [1, 2, 5]
    students: [tiny-qwen2-xs, tiny-qwen2-s]
    ce_weight: 0.1
    smoke: true

Keys are the flags' names (`ce_weight` or `ce-weight`); values are what the flag takes (a
list for comma-separated flags, true/false for switches). Flags on the command line win. An
unknown key or a value of the wrong type is one line naming the key and the fix."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from kdray.errors import ConfigError

CONFIG_FLAG = "--config"


def config_path(argv: Sequence[str]) -> Path | None:
    """The --config FILE in argv, if any (also --config=FILE)."""
    for i, arg in enumerate(argv):
        if arg == CONFIG_FLAG and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith(CONFIG_FLAG + "="):
            return Path(arg.split("=", 1)[1])
    return None


def read_config_file(path: Path) -> dict:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: pass --config PATH") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"config file {path} is not readable YAML ({first})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of flag names to values, got "
            f"{type(loaded).__name__}"
        )
    return loaded


def _convert(action: argparse.Action, key: str, value, path: Path):
    """The value as the flag's parser would produce it from the command line."""
    where = f"config file {path}: {key}"
    if action.nargs == 0:  # a switch (store_true)
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or isinstance(value, dict) or value is None:
        raise ConfigError(f"{where} must be {_expects(action)}, got {value!r}")
    if isinstance(value, list):
        if any(isinstance(v, (list, dict, bool)) or v is None for v in value):
            raise ConfigError(f"{where} must be a list of plain values, got {value!r}")
        value = ",".join(str(v) for v in value)
    text = str(value)
    try:
        converted = action.type(text) if action.type else text
    except argparse.ArgumentTypeError as error:  # kdray's own parsers name what they expect
        raise ConfigError(f"{where}: {error}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"{where} must be {_expects(action)}, got {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where} must be one of {choices}, got {value!r}")
    return converted


def _expects(action: argparse.Action) -> str:
    names = {int: "an integer", float: "a number", str: "a string"}
    return names.get(action.type, "a value like the flag's (see --help)")


def apply_config_file(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Set the parser's defaults from --config FILE (so command-line flags still win)."""
    path = config_path(argv)
    if path is None:
        return
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    defaults = {}
    for raw_key, value in read_config_file(path).items():
        key = str(raw_key).replace("-", "_")
        if key not in actions or key in ("help", "config"):
            known = ", ".join(sorted(k for k in actions if k not in ("help", "config")))
            raise ConfigError(
                f"config file {path}: unknown key {raw_key!r}; keys are the study's flags: {known}"
            )
        defaults[key] = _convert(actions[key], str(raw_key), value, path)
    parser.set_defaults(**defaults)


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        CONFIG_FLAG, metavar="FILE", help="YAML/JSON mapping of flag names to values; "
        "command-line flags win (kdray/cli/config_file.py)",
    )  # fmt: skip
