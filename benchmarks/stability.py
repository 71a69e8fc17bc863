"""Do the tiny world's answers repeat? Runs the default temperature study (3 paired seeds) plus
seeds 3 and 4 of the headline cell (`tiny-qwen2-s`, KD T=1 vs SFT: 5 paired seeds), then all of
it again with the float path perturbed (`ATEN_CPU_CAPABILITY=avx2` instead of the machine's
AVX-512 kernels, or `default` where torch picks AVX2 already; in a fresh cache, so the teacher is
trained again and the bases come from the package, where all 5 seeds' bases of the headline cell
ship: a stand-in for a second machine). Prints one table: per cell and variant, the
paired difference to the same student's SFT (mean and 95% CI, on accuracy, held-out NLL and
held-out KL(teacher ‖ student)), SD of the differences, |mean|/SD on NLL and KL, and whether
the perturbed CI overlaps the unperturbed one with agreeing signs; then in how many runs the
perturbation changed a number at all.

    python benchmarks/stability.py                        # about 40 minutes on 2 CPUs
    python benchmarks/stability.py --baseline-store sqlite:///mlflow.db \
        --baseline-cache ~/.cache/kdray                   # reuse a default study already run
                                                          # (19 minutes); --headline-only:
                                                          # perturb the headline cell only
    python benchmarks/stability.py --family llama         # another world's headline cell
    python benchmarks/stability.py --domain commonsense   # (its `-s` student, 5 seeds):
                                                          # 22 and 14 minutes (commonsense,
                                                          # instruction) from an empty cache;
                                                          # Llama 14 with its bases cached

In another family or domain than the default (Qwen, math) the benchmark runs that world's
headline cell only (its `-s` student, KD T=1 vs SFT, seeds 0-4) in both variants. No package
ships that world's bases, so the perturbed variant takes a copy of the bases the unperturbed one
pretrained (or found in --baseline-cache), as the default world's perturbed variant takes the
package's: what is perturbed is the fine-tuning of teacher and students, not the pretraining.

Targets (issue 19): on the headline cell |mean Δ| / SD(Δ) >= 1.5 on NLL and SD(Δ accuracy)
<= 4 points; every cell's perturbed CI overlaps the unperturbed one, with the same sign where
either excludes 0."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.loader import load_mlflow_results
from analysis.replicates import format_ci, paired_table
from kdray.cli.package_bases import HEADLINE_EXTRA_SEEDS, HEADLINE_SEEDS, HEADLINE_STUDENT
from kdray.study.presets import TINY_STUDENTS, TINY_WORLDS
from kdray.tracking.runs import role_is

ROOT = Path(__file__).resolve().parents[1]


def perturbed_env() -> dict[str, str]:
    """Another float path than this machine's: AVX2 kernels where torch picks AVX-512, the
    scalar ones where it already picks AVX2 (the variable must name a capability the CPU has)."""
    import torch

    current = torch.backends.cpu.get_cpu_capability()
    return {"ATEN_CPU_CAPABILITY": "avx2" if current.startswith("AVX512") else "default"}


def run(flags: list[str], env: dict[str, str]) -> None:
    command = [sys.executable, str(ROOT / "studies" / "temperature.py"), *flags]
    print("$", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(command[1:]), flush=True)
    # RAY_ADDRESS=local: a Ray of its own, not whatever `ray start` cluster runs on the machine
    subprocess.run(command, check=True, env={**os.environ, "RAY_ADDRESS": "local", **env})


def latest_study_frames(uri: str) -> pd.DataFrame:
    """Rows of the latest study (parent run) of each of the benchmark's experiments in the store
    (`stability-*`: not the findings' studies that may share it), and of `kdray-temperature`,
    the default study a --baseline-store holds."""
    client = MlflowClient(uri)
    frames = []
    for experiment in client.search_experiments():
        name = experiment.name
        if name != "kdray-temperature" and (
            not name.startswith("stability-") or "-findings-" in name
        ):
            continue
        parents = client.search_runs(
            [experiment.experiment_id], role_is("study"),
            order_by=["attributes.start_time DESC"],
        )  # fmt: skip
        for parent in parents[:1]:  # the latest study of each experiment
            frames.append(load_mlflow_results(uri, parent.info.run_id))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


DEFAULT_WORLD = ("qwen", "math")
"""(family, domain) of the default study, whose bases ship with the package."""


def headline_student(family: str) -> str:
    """The headline cell's student in a family's tiny zoo: the one of its size that
    HEADLINE_STUDENT is in the default family's."""
    return TINY_STUDENTS[family][TINY_STUDENTS[DEFAULT_WORLD[0]].index(HEADLINE_STUDENT)]


def default_world(family: str, domain: str) -> bool:
    return (family, domain) == DEFAULT_WORLD


def share_bases(source_cache: Path, target_cache: Path) -> int:
    """Copy the pretrained bases of one cache into another (each a complete, verified folder):
    how many. The perturbed variant of a world without packaged bases starts from them."""
    source = source_cache / "bases"
    folders = sorted(f for f in source.iterdir() if f.is_dir()) if source.is_dir() else []
    for folder in folders:
        shutil.copytree(folder, target_cache / "bases" / folder.name, dirs_exist_ok=True)
    return len(folders)


def variant(
    work: Path,
    name: str,
    env: dict[str, str],
    store: str | None = None,
    cache: str | None = None,
    headline_only: bool = False,
    world: tuple[str, str] = ("qwen", "math"),
) -> pd.DataFrame:
    """The default study (unless `store` holds one, built with `cache`) and the headline's
    extra seeds, in one store and cache per variant; `headline_only`: seeds 0-4 of the
    headline cell alone. `world`: the (family, domain) it runs in."""
    uri = store or f"sqlite:///{work / name / 'mlflow.db'}"
    common = ["--tracking-uri", uri, "--cache-dir", cache or str(work / name / "cache")]
    if not default_world(*world):
        common += ["--family", world[0], "--domain", world[1]]
    if store is None and not headline_only:
        run([*common, "--experiment", f"stability-{name}",
             "--results-dir", str(work / name / "default")], env)  # fmt: skip
    seeds = HEADLINE_SEEDS if store is None and headline_only else HEADLINE_EXTRA_SEEDS
    run([*common, "--experiment", f"stability-{name}-headline",
         "--students", headline_student(world[0]), "--temperatures", "1", "--seeds", seeds,
         "--results-dir", str(work / name / "headline")], env)  # fmt: skip
    return latest_study_frames(uri)


METRICS = {"acc": "accuracy", "nll": "nll", "kl": "kl_teacher_student",
           "unsure": "nll_teacher_unsure", "sure": "nll_teacher_sure"}  # fmt: skip
"""The table's metrics by suffix: accuracy, held-out NLL, held-out KL(teacher ‖ student),
where KD's effect on fidelity shows even when it leaves NLL alone, and the NLL split where the
teacher is unsure (its choices of wording: what KD can pass on) and sure (the arithmetic).
Runs trained before the split have no `unsure`/`sure` until benchmarks/rescore.py fills them."""


def cells(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["student", "method", "temperature", "noise_sigma", "teacher_kind"]
    merged = None
    for suffix, metric in METRICS.items():
        if metric not in frame or frame[metric].isna().all():
            continue
        table = paired_table(frame, metric).set_index(keys).add_suffix(f"_{suffix}")
        merged = table if merged is None else merged.join(table)
    merged = merged.reset_index()
    return merged[merged["method"] != "sft"]


def overlaps(a_mean, a_ci, b_mean, b_ci) -> bool:
    return abs(a_mean - b_mean) <= a_ci + b_ci


def signs_agree(a_mean, a_ci, b_mean, b_ci) -> bool:
    excludes = [abs(m) > c for m, c in ((a_mean, a_ci), (b_mean, b_ci))]
    return not any(excludes) or (a_mean > 0) == (b_mean > 0)


def ratio(row: pd.Series, suffix: str) -> float:
    sd = row[f"delta_sd_{suffix}"]
    return abs(row[f"delta_{suffix}"]) / sd if sd else 0.0


def delta_text(row: pd.Series, suffix: str, digits: int) -> str:
    if f"delta_{suffix}" not in row:
        return "n/a"
    return format_ci(row[f"delta_{suffix}"], row[f"delta_ci_{suffix}"], digits, True)


def ratio_text(row: pd.Series, suffix: str) -> str:
    return f"{ratio(row, suffix):.2f}" if f"delta_{suffix}" in row else "n/a"


def report(tables: dict[str, pd.DataFrame]) -> None:
    print("\n| cell | variant | n | Δ accuracy (95% CI) | SD(Δ acc) | Δ NLL (95% CI) | SD(Δ NLL) "
          "| \\|Δ NLL\\|/SD | Δ KL (95% CI) | \\|Δ KL\\|/SD | Δ NLL, teacher unsure "
          "| \\|Δ\\|/SD | Δ NLL, teacher sure | \\|Δ\\|/SD "
          "| CI overlaps, signs agree (acc / NLL / KL) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = tables["unperturbed"].set_index(["student", "temperature"])
    for name, table in tables.items():
        for _, row in table.iterrows():
            check = ""
            if name != "unperturbed":
                ref = base.loc[(row["student"], row["temperature"])]
                check = " / ".join(
                    "yes" if overlaps(row[f"delta_{m}"], row[f"delta_ci_{m}"], ref[f"delta_{m}"],
                                      ref[f"delta_ci_{m}"])
                    and signs_agree(row[f"delta_{m}"], row[f"delta_ci_{m}"], ref[f"delta_{m}"],
                                    ref[f"delta_ci_{m}"]) else "NO"
                    for m in ("acc", "nll", "kl")
                )  # fmt: skip
            cell = f"{row['student']} kd T={row['temperature']:g}"
            print(f"| {cell} | {name} | {int(row['pairs_acc'])} | {delta_text(row, 'acc', 1)} "
                  f"| {row['delta_sd_acc']:.1f} "
                  f"| {delta_text(row, 'nll', 4)} | {row['delta_sd_nll']:.4f} "
                  f"| {ratio_text(row, 'nll')} | {delta_text(row, 'kl', 4)} "
                  f"| {ratio_text(row, 'kl')} | {delta_text(row, 'unsure', 4)} "
                  f"| {ratio_text(row, 'unsure')} | {delta_text(row, 'sure', 4)} "
                  f"| {ratio_text(row, 'sure')} | {check} |")  # fmt: skip


def bits_changed(unperturbed: pd.DataFrame, perturbed: pd.DataFrame) -> str:
    """One line: in how many of the runs both variants made did a metric change at all (a
    perturbation that changes no bit checks nothing)."""
    keys = ["student", "method", "temperature", "noise_sigma", "teacher_kind", "seed", "task"]
    students = [frame[frame["role"] == "student"] for frame in (unperturbed, perturbed)]
    both = students[0].merge(students[1], on=keys, suffixes=("", "_p"))
    if both.empty:
        return "no run of one variant has a twin in the other: nothing to compare bit for bit"
    changed = (both["accuracy"] != both["accuracy_p"]) | (both["nll"] != both["nll_p"])
    runs = both.groupby(keys[:-1], dropna=False)["accuracy"].size().shape[0]
    runs_changed = both[changed].groupby(keys[:-1], dropna=False).size().shape[0]
    return (f"float path: {runs_changed} of {runs} runs made in both variants changed accuracy "
            "or NLL (0 would mean the perturbation changed nothing)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-store", help="MLflow store with the default study already run")
    parser.add_argument("--baseline-cache", help="the kdray cache that study used")
    parser.add_argument(
        "--headline-only",
        action="store_true",
        help="perturbed variant: the headline cell's 5 seeds only, not the whole default study",
    )
    parser.add_argument(
        "--family",
        choices=sorted(TINY_STUDENTS),
        default=DEFAULT_WORLD[0],
        help="tiny family (default qwen); another runs its headline cell only",
    )
    parser.add_argument(
        "--domain",
        choices=sorted(TINY_WORLDS),
        default=DEFAULT_WORLD[1],
        help="task domain (default math); another runs its headline cell only",
    )
    parser.add_argument("--work", type=Path, default=None, help="stores and caches (default: tmp)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: print the table from the stores an earlier run left in --work",
    )
    args = parser.parse_args()
    world = (args.family, args.domain)
    if args.baseline_store and not default_world(*world):
        parser.error(
            "--baseline-store holds the default study (Qwen, math); in another world give "
            "--baseline-cache alone and both variants run the headline cell"
        )
    work = args.work or Path(tempfile.mkdtemp(prefix="kdray-stability-"))
    started = time.perf_counter()
    if args.report_only:
        stores = {
            name: f"sqlite:///{work / name / 'mlflow.db'}" for name in ("unperturbed", "perturbed")
        }
        stores["unperturbed"] = args.baseline_store or stores["unperturbed"]
        frames = {name: latest_study_frames(uri) for name, uri in stores.items()}
    else:
        headline_only = args.headline_only or not default_world(*world)
        baseline_cache = args.baseline_cache or str(work / "unperturbed" / "cache")
        frames = {"unperturbed": variant(work, "unperturbed", {}, args.baseline_store,
                                         baseline_cache, headline_only, world)}  # fmt: skip
        if not default_world(*world):
            shared = share_bases(Path(baseline_cache), work / "perturbed" / "cache")
            print(f"perturbed variant: {shared} pretrained bases copied from {baseline_cache}")
        frames["perturbed"] = variant(
            work, "perturbed", perturbed_env(), headline_only=headline_only, world=world
        )
    tables = {name: cells(frame) for name, frame in frames.items()}
    report(tables)
    print(bits_changed(frames["unperturbed"], frames["perturbed"]))
    print(f"\n{(time.perf_counter() - started) / 60:.1f} minutes; stores and caches in {work}")


if __name__ == "__main__":
    main()
