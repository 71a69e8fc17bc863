"""How far is a top-k teacher cache from the online teacher? Measured, not assumed.

    python benchmarks/cache_fidelity.py                 # the loss part (a few minutes)
    python benchmarks/cache_fidelity.py --accuracy      # plus the trials (about 20 minutes)

Loss part: the tiny preset's teacher (tiny-qwen2-m, task-aware) and an SFT-trained tiny-qwen2-s
as the student, on the first --examples training problems. For each k in {8, 32, 128},
T in {1, 2, 5} and sigma in {0, 1, 2, 5} it compares, over the scored tokens:
- teacher KL: KL(online tempered teacher || the cache's reconstruction of it), the tail's mass
  spread evenly over the tokens outside the top-k (in nats per token);
- loss error: |kd loss from the cache - from the online teacher| / the online loss;
- gradient cosine: between the two losses' gradients on the student's logits.
With sigma > 0 the online teacher gets noise on every raw logit; the cache can only put the same
noise on its k stored tokens (the tail bucket is left as it was): that is what a top-k cache
could do, and the numbers show why trials with noise do not use it.

Accuracy part (--accuracy): the temperature study (kd, T in {1, 2, 5}, student tiny-qwen2-s,
sigma 0) with the teacher online and with top-k caches of each k (forced also at T = 5, where
kdray's rules would run the teacher online); prints test accuracy per trial and the difference
from online. Top-k with noise is never trained (a top-k cache cannot carry noise over the whole
vocabulary; kdray runs those trials online), so the sigma grid is measured in the loss part."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

import ray
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from kdray.cli.args import config_from_flags
from kdray.config.run import KDConfig
from kdray.config.run_spec import RunSpec
from kdray.data.batches import collate
from kdray.data.examples import trial_examples
from kdray.losses.divergences import (
    SparseTeacher,
    bucket_log_probs,
    restrict_to_vocab,
    training_loss,
)
from kdray.models import load_model
from kdray.study import teacher_signals as trial_teacher_signals
from kdray.study.grid import run_study
from kdray.study.presets import TINY_STUDENT_TRAIN, TINY_TEACHER_TRAIN, TINY_WORLD
from kdray.study.teachers import prepare_teacher
from kdray.teacher.cache import compress_rows
from kdray.teacher.signal import CACHE_TOP_K, TeacherSignal, choose_teacher_signal
from kdray.tracking.runs import PARENT_TAG
from kdray.world.build import build_world

KS = (8, 32, 128)
TEMPERATURES = (1.0, 2.0, 5.0)
SIGMAS = (0.0, 1.0, 2.0, 5.0)


def default_config():
    return config_from_flags("temperature")


def prepared(world, name: str, train, cache: Path):
    """A task-aware model as the studies prepare it (cached: shared with them)."""
    eval_config = default_config().eval
    return prepare_teacher(world, name, "task-aware", train, eval_config, cache / "ray_results")


def reconstructed_log_probs(packed: torch.Tensor, temperature: float, vocab: int) -> torch.Tensor:
    """The full-vocabulary tempered teacher a top-k cache implies (tail spread evenly)."""
    k = (packed.shape[-1] - 1) // 2
    _, log_p = bucket_log_probs(torch.zeros(*packed.shape[:-1], vocab), packed, temperature, vocab)
    full = (log_p[..., k] - torch.log(torch.tensor(float(vocab - k))))[..., None].expand(
        *packed.shape[:-1], vocab
    )
    return full.scatter(-1, packed[..., k + 1 :].long(), log_p[..., :k])


def loss_part(args, world, cache: Path) -> list[dict]:
    teacher_dir = prepared(world, "tiny-qwen2-m", TINY_TEACHER_TRAIN, cache).folder
    student_dir = prepared(world, "tiny-qwen2-s", TINY_STUDENT_TRAIN, cache).folder
    tokenizer = world.tokenizer()
    vocab = len(tokenizer)
    spec = RunSpec.in_world(
        world, "student", "tiny-qwen2-s", TINY_STUDENT_TRAIN, KDConfig(), default_config().eval
    )
    examples = trial_examples(spec, tokenizer, "train")[: args.examples]
    batch = collate(examples, tokenizer.pad_token_id)
    cpu = torch.device("cpu")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        teacher = restrict_to_vocab(load_model(str(teacher_dir), cpu)(**inputs).logits, vocab)
        student = restrict_to_vocab(load_model(str(student_dir), cpu)(**inputs).logits, vocab)
    teacher = F.log_softmax(teacher.float(), -1)  # raw logits up to a constant per position
    mask = batch["labels"][:, 1:] != -100
    noise = torch.randn(teacher.shape, generator=torch.Generator().manual_seed(0))
    rows = []
    for k in KS:
        top = compress_rows(teacher.reshape(-1, vocab), k)
        cached = SparseTeacher(
            top["top_log_probs"].reshape(*teacher.shape[:2], k),
            top["top_indices"].long().reshape(*teacher.shape[:2], k),
            top["tail_log_mass"].reshape(teacher.shape[:2]),
            vocab,
        )
        for temperature in TEMPERATURES:
            for sigma in SIGMAS:
                noisy_online = teacher + sigma * noise
                support_noise = noise.gather(-1, cached.indices)
                noisy_cached = dataclasses.replace(
                    cached, log_probs=cached.log_probs + sigma * support_noise
                )
                online_t = F.log_softmax(noisy_online[:, :-1] / temperature, -1)
                implied = reconstructed_log_probs(
                    noisy_cached.shifted().packed(), temperature, vocab
                )
                kl = (online_t.exp() * (online_t - implied)).sum(-1)[mask]
                kd = KDConfig(method="kd", temperature=temperature)
                online_loss, online_grad = loss_and_grad(student, batch, kd, noisy_online)
                cache_loss, cache_grad = loss_and_grad(student, batch, kd, noisy_cached)
                rows.append(
                    {
                        "k": k,
                        "T": temperature,
                        "sigma": sigma,
                        "teacher_kl": float(kl.mean()),
                        "loss_online": online_loss,
                        "loss_rel_error": abs(cache_loss - online_loss) / online_loss,
                        "grad_cosine": float(
                            F.cosine_similarity(online_grad.flatten(), cache_grad.flatten(), 0)
                        ),
                    }
                )
    return rows


def loss_and_grad(
    student: torch.Tensor, batch, kd: KDConfig, teacher
) -> tuple[float, torch.Tensor]:
    logits = student.clone().requires_grad_()
    loss, _ = training_loss(logits, batch["labels"], kd, teacher)
    loss.backward()
    return float(loss), logits.grad


def forced_top_k(kd: KDConfig, vocab_size: int) -> TeacherSignal:
    """The top-k cache for every kd trial, also where kdray's rules would run the teacher
    online (T > 2): this script measures what the cache would do there."""
    if not kd.needs_teacher_logits or kd.teacher_signal == "online":
        return choose_teacher_signal(kd, vocab_size)
    return TeacherSignal(CACHE_TOP_K, "forced by benchmarks/cache_fidelity.py", kd.cache_top_k)


def accuracy_part(args) -> dict[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="kdray-fidelity-"))
    variants = {"online": {"teacher_signal": "online"}}
    for k in KS:
        variants[f"top-{k}"] = {"cache_top_k": k, "cache_full_vocab_limit": 0}
    trial_teacher_signals.choose_teacher_signal = forced_top_k  # in this driver process only
    scores = {}
    for name, kd_fields in variants.items():
        flags = [
            "--methods", "kd", "--students", "tiny-qwen2-s", "--temperatures", "1,2,5",
            "--seeds", args.seeds,
            "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--experiment", f"fidelity-{name}",
            "--results-dir", str(work / name),
        ]  # fmt: skip
        config = config_from_flags("temperature", flags)
        config = dataclasses.replace(config, kd=dataclasses.replace(config.kd, **kd_fields))
        outcome = run_study(config)
        client = MlflowClient(outcome.tracking_uri)
        runs = client.search_runs(
            [outcome.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{outcome.parent_run_id}'",
        )
        by_t: dict[str, list[float]] = {}
        for run in runs:
            if run.data.params["method"] == "kd":
                label = f"T={float(run.data.params['temperature']):g}"
                by_t.setdefault(label, []).append(run.data.metrics["score"])
        scores[name] = {label: statistics.mean(by_t[label]) for label in sorted(by_t)}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=64, help="training problems compared")
    parser.add_argument("--accuracy", action="store_true", help="also train the trials")
    parser.add_argument(
        "--seeds", default="0", help="accuracy part: seeds per trial, averaged (e.g. 0,1,2)"
    )
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args()
    cache = default_config().cache_root()
    world, _ = build_world(TINY_WORLD, cache)
    ray.init(include_dashboard=False)
    rows = loss_part(args, world, cache)
    ray.shutdown()
    print(f"\nteacher tiny-qwen2-m -> student tiny-qwen2-s (SFT), {args.examples} problems")
    print("| k | T | sigma | teacher KL (nats/token) | kd loss rel. error | gradient cosine |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['k']} | {r['T']:g} | {r['sigma']:g} | {r['teacher_kl']:.4f} "
            f"| {100 * r['loss_rel_error']:.2f}% | {r['grad_cosine']:.4f} |"
        )
    result = {"loss": rows}
    if args.accuracy:
        scores = accuracy_part(args)
        result["accuracy"] = scores
        print("\n| teacher signal | " + " | ".join(scores["online"]) + " | mean diff. vs online |")
        print("|---|" + "---|" * (len(scores["online"]) + 1))
        for name, by_t in scores.items():
            diff = statistics.mean(by_t[t] - scores["online"][t] for t in scores["online"])
            cells = " | ".join(f"{by_t[t]:.1f}" for t in scores["online"])
            print(f"| {name} | {cells} | {diff:+.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
