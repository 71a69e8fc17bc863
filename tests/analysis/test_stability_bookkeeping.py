"""benchmarks/stability.py's set-up for another world than the default, without training a
student: the headline cell's student per family, the perturbed variant starting from the very
bases the unperturbed one pretrained (found by key in its own cache, not pretrained again), and
a default-study store refused for another world."""

import importlib.util
import subprocess
import sys
from pathlib import Path

from kdray.config.pretrain import PretrainConfig
from kdray.world.bases import build_base
from kdray.world.build import build_world
from kdray.world.synthetic_math import MathWorldConfig

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "stability.py"
spec = importlib.util.spec_from_file_location("stability", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_each_family_s_headline_student():
    assert bench.headline_student("qwen") == "tiny-qwen2-s"
    assert bench.headline_student("llama") == "tiny-llama-s"


def test_the_perturbed_cache_finds_the_shared_bases_instead_of_pretraining(tmp_path):
    world_config = MathWorldConfig(train_size=200, validation_size=20, test_size=20)
    pretrain = PretrainConfig(steps=3, teacher_steps=3)
    world, _ = build_world(world_config, tmp_path / "unperturbed", "llama")
    folder, built = build_base(world, "tiny-llama-xs", 0, pretrain, teacher=False)
    assert built

    assert bench.share_bases(tmp_path / "unperturbed", tmp_path / "perturbed") == 1
    other_world, _ = build_world(world_config, tmp_path / "perturbed", "llama")
    found, built_again = build_base(other_world, "tiny-llama-xs", 0, pretrain, teacher=False)
    assert not built_again  # found in the perturbed cache by its key: not pretrained again
    assert found.parent.parent == tmp_path / "perturbed" and found.name == folder.name
    assert (found / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert bench.share_bases(tmp_path / "nothing-here", tmp_path / "perturbed") == 0


def test_a_default_study_store_is_refused_in_another_world():
    done = subprocess.run(
        [sys.executable, str(PATH), "--family", "llama", "--baseline-store", "sqlite:///x.db"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--baseline-store holds the default study" in done.stderr.splitlines()[-1]
