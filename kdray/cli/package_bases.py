"""Write the default study's pretrained bases, and those of the headline cell's two extra seeds,
into the package, where a fresh cache takes them from instead of pretraining (kdray.world.bases):

    python -m kdray.cli.package_bases [--cache-dir DIR]

It builds (or reuses from the cache) the world and the bases of `studies/temperature.py`'s
default configuration and of the headline cell (`tiny-qwen2-s`, seeds 0-4, as
benchmarks/stability.py runs it), pretraining any that are missing one after another in this
process, then replaces `kdray/world/packaged_bases/` with a copy of each: the model folder, its
pretraining record, the SHA-256 of the tokenizer it learned with, and the checksums every
install verifies."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from kdray.cache import is_complete, write_checksums
from kdray.cli.args import config_from_flags
from kdray.console import say
from kdray.study.bases import BaseNeed, needed_bases
from kdray.study.config import StudyConfig
from kdray.world.bases import (
    PACKAGED_BASES,
    PACKAGED_CHECKSUMS,
    PACKAGED_RECORD,
    base_folder,
    build_base,
    tokenizer_sha256,
)
from kdray.world.build import build_world

COMMAND = "python -m kdray.cli.package_bases"
SKIPPED = (".complete", ".checksums.json", "*.lock")
HEADLINE_STUDENT = "tiny-qwen2-s"
HEADLINE_EXTRA_SEEDS = "3,4"  # past the default study's seeds 0-2
HEADLINE_SEEDS = f"0,1,2,{HEADLINE_EXTRA_SEEDS}"
"""The headline cell: this student, KD T=1 against SFT, 5 paired seeds (benchmarks/stability.py)."""
HEADLINE_FLAGS = ["--students", HEADLINE_STUDENT, "--temperatures", "1", "--seeds", HEADLINE_SEEDS]
PACKAGED_STUDIES = ([], HEADLINE_FLAGS)
"""The studies whose bases ship: the default one, and the headline cell with its 5 paired seeds,
so that seeds 3 and 4 start from the same bases on every machine as seeds 0-2 do (a base
pretrained again on another float path comes out a different model)."""


def packaged_needs(cache_dir: str | None) -> tuple[StudyConfig, list[BaseNeed]]:
    """The default study's configuration, and every base of PACKAGED_STUDIES (same world)."""
    flags = ["--cache-dir", cache_dir] if cache_dir else []
    configs = [config_from_flags("temperature", [*flags, *extra]) for extra in PACKAGED_STUDIES]
    needs = [need for config in configs for need in needed_bases(config)]
    return configs[0], list(dict.fromkeys(needs))


def package_bases(cache_dir: str | None, out: Path = PACKAGED_BASES) -> list[Path]:
    """The bases of PACKAGED_STUDIES, copied into `out` (emptied first); their folders there."""
    config, needs = packaged_needs(cache_dir)
    world, _ = build_world(config.world, config.cache_root(), config.family)
    tokenizer = tokenizer_sha256(world)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written = []
    for need in needs:
        folder = base_folder(world, need.model, need.seed, config.pretrain, need.teacher)
        if not is_complete(folder):
            say(f"pretraining base {need.model} seed {need.seed} (not in the cache)")
        build_base(world, need.model, need.seed, config.pretrain, need.teacher)
        target = out / folder.name
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns(*SKIPPED))
        record = {"tokenizer_sha256": tokenizer, "world": world.key, "made_by": COMMAND}
        (target / PACKAGED_RECORD).write_text(json.dumps(record, indent=1))
        write_checksums(target, PACKAGED_CHECKSUMS)
        say(f"packaged {target.name}")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", help="the cache to take or build the bases in")
    args = parser.parse_args(argv)
    written = package_bases(args.cache_dir)
    size = sum(f.stat().st_size for folder in written for f in folder.iterdir())
    say(f"{len(written)} bases, {size / 2**20:.1f} MiB, in {PACKAGED_BASES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
