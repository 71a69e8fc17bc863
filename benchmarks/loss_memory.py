"""Peak extra memory and time of a distillation loss at Qwen2.5's vocabulary, forward and
backward: kdray's chunked loss vs a naive implementation vs TRL's `generalized_jsd_loss`.

    pip install -e '.[bench]' && python benchmarks/loss_memory.py

Each implementation runs in a fresh process (peak RSS is per process): inputs are allocated,
the RSS is read, then forward + backward runs `--repeats` times; extra = peak RSS - that
baseline, time = the median repeat. A separate pass checks that the three agree (loss and
gradient, max abs diff) on the same inputs. Ratios are measured side by side in one run."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

VOCAB = 151_936


def inputs(tokens: int, vocab: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(1, tokens, vocab, generator=generator).requires_grad_()
    teacher = 2 * torch.randn(1, tokens, vocab, generator=generator)
    return student, teacher


def naive_loss(student, teacher, beta):
    """Whole-tensor generalized JSD, written the plain way (what most training code does)."""
    log_q = F.log_softmax(student.float(), dim=-1)
    log_p = F.log_softmax(teacher.float(), dim=-1)
    log_m = torch.logaddexp(
        log_p + torch.log(torch.tensor(beta)), log_q + torch.log1p(torch.tensor(-beta))
    )
    to_teacher = (log_p.exp() * (log_p - log_m)).sum(-1)
    to_student = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (beta * to_teacher + (1 - beta) * to_student).mean()


def kdray_loss(student, teacher, beta, chunk_tokens=None):
    from kdray.losses.divergences import generalized_jsd_per_token, tempered_divergence

    mask = torch.ones(student.shape[:-1], dtype=torch.bool)
    return tempered_divergence(
        lambda q, p: generalized_jsd_per_token(q, p, beta),
        student, teacher, mask, temperature=1.0, chunk_tokens=chunk_tokens,
    )  # fmt: skip


def trl_loss(student, teacher, beta):
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    labels = torch.zeros(student.shape[:-1], dtype=torch.long)  # every token counts
    return GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta)


def kdray_unchecked_loss(student, teacher, beta):
    """kdray's loss with its entry shape check turned off: the check's cost, side by side."""
    from kdray.losses import divergences

    divergences.check_shapes = lambda *args, **kwargs: None
    return kdray_loss(student, teacher, beta)


IMPLEMENTATIONS = {
    "naive": naive_loss,
    "kdray": kdray_loss,
    "kdray-unchecked": kdray_unchecked_loss,
    "trl": trl_loss,
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure_one(name: str, tokens: int, vocab: int, beta: float, repeats: int) -> dict:
    loss_fn = IMPLEMENTATIONS[name]
    student, teacher = inputs(tokens, vocab)
    loss_fn(student[:, :8], teacher[:, :8], beta).backward()  # imports and lazy init, tiny
    student.grad = None
    baseline = _rss_bytes()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        loss_fn(student, teacher, beta).backward()
        times.append(time.perf_counter() - started)
        student.grad = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"name": name, "extra_bytes": peak - baseline, "seconds": statistics.median(times)}


def agreement(tokens: int, vocab: int, beta: float, names: list[str]) -> dict:
    results = {}
    for name in names:
        loss_fn = IMPLEMENTATIONS[name]
        student, teacher = inputs(tokens, vocab)
        loss = loss_fn(student, teacher, beta)
        loss.backward()
        results[name] = (loss.item(), student.grad)
    reference_loss, reference_grad = results["naive"]
    return {
        name: {
            "loss_diff": abs(loss - reference_loss),
            "grad_max_abs_diff": (grad - reference_grad).abs().max().item(),
        }
        for name, (loss, grad) in results.items()
        if name != "naive"
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process: one implementation
    parser.add_argument(
        "--without-trl", action="store_true", help="skip TRL (not installed without [bench])"
    )
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure_one(args.only, args.tokens, args.vocab, args.beta, args.repeats)))
        return 0

    print(f"generalized JSD (beta={args.beta}), {args.tokens} tokens x vocab {args.vocab}, fp32, "
          f"forward + backward, {torch.get_num_threads()} threads", flush=True)  # fmt: skip
    rows = {}
    names = [n for n in IMPLEMENTATIONS if not (args.without_trl and n == "trl")]
    for name in names:
        child = subprocess.run(
            [sys.executable, __file__, "--only", name, "--tokens", str(args.tokens),
             "--vocab", str(args.vocab), "--beta", str(args.beta), "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows[name] = json.loads(child.stdout.strip().splitlines()[-1])
    checks = agreement(args.tokens, args.vocab, args.beta, names)

    logits_mb = args.tokens * args.vocab * 4 / 2**20
    print(f"one fp32 logits tensor: {logits_mb:.0f} MiB")
    print(f"{'implementation':<16}{'peak extra MiB':>16}{'x logits':>10}{'seconds':>10}")
    for name, row in rows.items():
        extra = row["extra_bytes"] / 2**20
        print(f"{name:<16}{extra:>16.0f}{extra / logits_mb:>10.2f}{row['seconds']:>10.2f}")
    naive, kdray, unchecked = rows["naive"], rows["kdray"], rows["kdray-unchecked"]
    memory_ratio = kdray["extra_bytes"] / naive["extra_bytes"]
    time_ratio = kdray["seconds"] / naive["seconds"]
    print(f"kdray / naive: peak extra memory {memory_ratio:.2f}x (target <= 0.25), "
          f"time {time_ratio:.2f}x (target <= 1.1)")  # fmt: skip
    check_time = kdray["seconds"] / unchecked["seconds"]
    check_memory = kdray["extra_bytes"] / unchecked["extra_bytes"]
    print(f"kdray / kdray without its shape check: peak extra memory {check_memory:.2f}x, "
          f"time {check_time:.3f}x")  # fmt: skip
    if trl := rows.get("trl"):
        print(f"kdray / TRL:   peak extra memory {kdray['extra_bytes'] / trl['extra_bytes']:.2f}x, "
              f"time {kdray['seconds'] / trl['seconds']:.2f}x")  # fmt: skip
    for name, check in checks.items():
        print(f"{name} vs naive: |loss diff| {check['loss_diff']:.2e}, "
              f"max |grad diff| {check['grad_max_abs_diff']:.2e} (target <= 1e-5)")  # fmt: skip
    met = (
        memory_ratio <= 0.25
        and time_ratio <= 1.1
        and checks["kdray"]["grad_max_abs_diff"] <= 1e-5
        and checks["kdray"]["loss_diff"] <= 1e-5
    )
    print("targets met" if met else "targets NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
