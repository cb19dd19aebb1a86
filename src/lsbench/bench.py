"""Benchmark: lsbench's training loop against two baselines, in one process, same data and threads.

    python -m lsbench.bench --model mlp --epochs 4 --baseline-epochs 4
    python -m lsbench.bench --methods all --epochs 3 --baseline-epochs 3 --no-notebook

Loops, each evaluating the test set after every epoch with the same metric code (in its epoch time):
- lsbench: `run_epochs`, the very function the pipeline calls (for the MLP, its manual step);
- idiomatic: what a competent PyTorch user writes: the normalised data as tensors in memory,
  batches by a random permutation, the model as plain modules (for the MLP an `nn.Sequential` of
  `nn.Linear`/`nn.ReLU`; other models are the registry's own modules), autograd on the same
  objective (`lsbench.methods`' loss; mixup's batch mixing in the loop), `torch.optim.Adam(fused=True)`,
  no host sync per step;
- seed notebook (MLP on 28x28 grey images only): the notebook as written, a torchvision-style
  Dataset doing PIL + ToTensor + Normalize per sample, a DataLoader (shuffle), plain Adam.
`--methods all` runs the lsbench and idiomatic pair once per training method (each at a typical
setting, each `Method.bench_param`) and prints a table of s/epoch per method. The loops run interleaved, one
epoch each in turn, so that the host's speed drifting over minutes
(shared machines do) falls on all of them; the first epoch of each is not timed. Denormal
flushing is process-wide: on for lsbench and the idiomatic loop (a setting any loop can use),
off for the notebook, which never set it. Printed: seconds per epoch, the ratios, achieved
GFLOP/s (counted by torch.utils.flop_counter), a matmul peak measured here, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lsbench.config import TrainConfig
from lsbench.data import ImageData, load_data
from lsbench.datasets import DatasetSpec, get_dataset, resolve_dataset
from lsbench.methods import METHODS, get_method, variant, variant_label
from lsbench.metrics import evaluate_logits
from lsbench.models import build_model
from lsbench.provenance import cpu_model
from lsbench.train import (DeviceData, configure_cpu, new_state, predict_logits, resolve_device, run_epochs,
                           sync_device, to_numpy)


def subset(data: ImageData, n_train: int | None, n_test: int | None) -> ImageData:
    return ImageData(data.train_images[:n_train], data.train_labels[:n_train], data.test_images[:n_test],
                     data.test_labels[:n_test], data.class_names, data.sha256, data.source)


def idiomatic_model(name: str, shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """The model as a user would write it: for the MLP, nn.Sequential with nn.Linear layers (the
    same initial numbers as lsbench's MLP for a seed); any other model is the registry's module."""
    model = build_model(name, shape, num_classes, seed)
    layers = getattr(model, "layers", None)
    if layers is None:
        return model
    seq: list[nn.Module] = [nn.Flatten()]
    for i, dense in enumerate(layers):
        linear = nn.Linear(dense.in_features, dense.out_features)
        with torch.no_grad():
            linear.weight.copy_(dense.weight.t())
            linear.bias.copy_(dense.bias)
        seq += [linear] + ([nn.ReLU()] if i < len(layers) - 1 else [])
    return nn.Sequential(*seq)


def idiomatic_epochs(model: nn.Module, data: DeviceData, method: str, param: float, cfg: TrainConfig,
                     seed: int) -> Iterator[dict[str, Any]]:
    """A plain PyTorch loop over in-memory tensors on `method`'s objective; yields one record per epoch."""
    m = get_method(method)
    classes = int(data.train_y.max()) + 1
    device = data.train_x.device
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    generator = torch.Generator().manual_seed(seed)
    test_y = to_numpy(data.test_y)
    n = data.train_x.shape[0]
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = torch.zeros((), device=device)
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x, target = data.train_x[idx], data.train_y[idx]
            if m.mix is not None:
                x, target = m.mix(x, target, param, classes, generator)
            optimizer.zero_grad()
            loss = m.loss(model(x), target, param)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        metrics = evaluate_logits(to_numpy(predict_logits(model, data.test_x)), test_y)
        sync_device(device)
        yield {"epoch": epoch, "train_loss": float(total) / -(-n // cfg.batch_size), **metrics,
               "epoch_seconds": time.perf_counter() - start}


class NotebookDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.FashionMNIST + ToTensor + Normalize(0.5, 0.5) do per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i, 0], mode="L")), int(self.labels[i])


def notebook_epochs(data: ImageData, model: nn.Module, cfg: TrainConfig, epsilon: float, seed: int,
                    device: torch.device, workers: int = 0) -> Iterator[dict[str, Any]]:
    """The seed notebook's loop, unchanged in substance; yields one record per epoch.

    `workers` > 0 only parallelises the per-sample transforms (for accuracy checks over many
    epochs); the notebook itself used 0, which is what timings must use.
    """
    torch.manual_seed(seed)
    train = torch.utils.data.DataLoader(NotebookDataset(data.train_images, data.train_labels),
                                        batch_size=cfg.batch_size, shuffle=True, num_workers=workers)
    test = torch.utils.data.DataLoader(NotebookDataset(data.test_images, data.test_labels), batch_size=1000)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=epsilon)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        for x, y in train:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x.to(device)) for x, _ in test])
        metrics = evaluate_logits(to_numpy(logits), data.test_labels)
        sync_device(device)
        yield {"epoch": epoch, **metrics, "epoch_seconds": time.perf_counter() - start}


def flops_per_epoch(model: nn.Module, shape: tuple[int, ...], batch: int, n_train: int, n_test: int) -> float:
    """FLOPs of one epoch: n_train / batch training steps (forward + backward, counted by
    torch.utils.flop_counter on one batch) plus a forward over the test set."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.cpu()
    x, y = torch.zeros(batch, *shape), torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False) as train_count:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as eval_count, torch.no_grad():
        model(x[:1])
    return train_count.get_total_flops() * n_train / batch + eval_count.get_total_flops() * n_test


def matmul_peak_gflops(device: torch.device, batch: int = 64, k: int = 784, n: int = 512, repeats: int = 200) -> float:
    """fp32 GFLOP/s of a batch matmul (batch x k @ k x n; the MLP's first layer) on this device:
    how fast the host is right now."""
    a, b = torch.randn(batch, k, device=device), torch.randn(k, n, device=device)
    for _ in range(10):
        a @ b
    sync_device(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync_device(device)
    return 2 * batch * k * n * repeats / (time.perf_counter() - start) / 1e9


def machine() -> dict[str, str]:
    info = {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def summarise(name: str, records: list[dict[str, Any]], flops: float) -> dict[str, Any]:
    timed = records[1:] if len(records) > 1 else records
    seconds = sum(r["epoch_seconds"] for r in timed) / len(timed)
    last = records[-1]
    return {"loop": name, "epochs": len(records), "s_per_epoch": seconds, "gflops": flops / seconds / 1e9,
            "accuracy": last["accuracy"], "ece": last["ece"], "mean_confidence": last["mean_confidence"],
            "epoch_seconds": [r["epoch_seconds"] for r in records]}


def median_epoch_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over the timed epochs (the first is skipped) of slow[i] / fast[i]: epoch i of each
    loop ran back to back, so a slow spell of the shared host falls on both sides of one ratio.

    >>> median_epoch_ratio([9.0, 20.0, 30.0, 24.0], [1.0, 4.0, 5.0, 3.0])
    6.0
    """
    return statistics.median(s / f for s, f in zip(slow[1:], fast[1:]))


def load_bench_data(path: Path, spec: DatasetSpec) -> ImageData:
    return load_data(path) if path.exists() else resolve_dataset(spec, None, path.parent / "download")


def run(args: argparse.Namespace, method: str | None = None, param: float | None = None) -> dict[str, Any]:
    """One benchmark: lsbench's loop and the baselines on `method` at `param` (default: label
    smoothing at --epsilon; the seed notebook only for label smoothing, its objective)."""
    method, param = variant(*(("label_smoothing", args.epsilon) if method is None else (method, param)))
    configure_cpu(args.threads)
    device = resolve_device(args.device)
    spec = get_dataset(args.dataset)
    data = subset(load_bench_data(Path(args.data or f"results/data/{args.dataset}.npz"), spec),
                  args.train_size, args.test_size)
    n_train, n_test, classes = len(data.train_labels), len(data.test_labels), len(data.class_names)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, threads=args.threads)
    device_data = DeviceData.from_data(data, spec.mean, spec.std, device)
    state = new_state(args.model, device_data, classes, args.seed, method, param, cfg)
    flops = flops_per_epoch(idiomatic_model(args.model, data.image_shape, classes, args.seed), data.image_shape,
                            cfg.batch_size, n_train, n_test)
    base = TrainConfig(**{**cfg.__dict__, "epochs": args.baseline_epochs})
    loops: dict[str, Iterator[dict[str, Any]]] = {
        "lsbench": run_epochs(state, device_data, method, param, cfg, classes),
        "idiomatic": idiomatic_epochs(idiomatic_model(args.model, data.image_shape, classes, args.seed),
                                      device_data, method, param, base, args.seed)}
    notebook = (args.model == "mlp" and data.image_shape[0] == 1 and args.notebook
                and method in ("cross_entropy", "label_smoothing"))
    if notebook:
        loops["seed notebook"] = notebook_epochs(data, idiomatic_model(args.model, data.image_shape, classes, args.seed),
                                                 base, param, args.seed, device, args.loader_workers)
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
    for epoch in range(1, max(cfg.epochs, args.baseline_epochs) + 1):  # one epoch of each in turn
        for name, loop in loops.items():
            torch.set_flush_denormal(name != "seed notebook")
            records[name].extend(islice(loop, 1))
        torch.set_flush_denormal(True)
        times = [f"{name} {rs[-1]['epoch_seconds']:.2f} s" for name, rs in records.items() if len(rs) == epoch]
        print(f"{variant_label(method, param)} epoch {epoch}: " + ", ".join(times), file=sys.stderr,
              flush=True)  # progress on long runs
    return {"machine": machine(), "device": str(device), "threads": args.threads, "seed": args.seed,
            "dataset": args.dataset, "model": args.model, "interleaved": True,
            "baseline_loader_workers": args.loader_workers, "n_train": n_train, "n_test": n_test,
            "method": method, "param": param, "variant": variant_label(method, param),
            "fast_step": type(state.stepper).__name__, "gflop_per_epoch": flops / 1e9,
            "matmul_peak_gflops": matmul_peak_gflops(device), "peak_rss_mib_total": peak_rss_mib(),
            "loops": [summarise(name, rs, flops) for name, rs in records.items() if rs]}


def ratios(result: dict[str, Any]) -> list[tuple[str, float, float | None]]:
    """(baseline, s/epoch ratio baseline / lsbench, median per-epoch ratio) for each baseline."""
    loops = {r["loop"]: r for r in result["loops"]}
    fast = loops["lsbench"]
    out = []
    for name, slow in loops.items():
        if name == "lsbench":
            continue
        median = (median_epoch_ratio(slow["epoch_seconds"], fast["epoch_seconds"])
                  if min(fast["epochs"], slow["epochs"]) > 1 else None)
        out.append((name, slow["s_per_epoch"] / fast["s_per_epoch"], median))
    return out


def report(result: dict[str, Any]) -> str:
    lines = [f"machine: {json.dumps(result['machine'])}",
             f"{result['dataset']} x {result['model']} on {result['device']}, {result['threads']} thread(s), "
             f"{result['n_train']} train / {result['n_test']} test images, {result['variant']} "
             f"(lsbench's step: {result['fast_step']})",
             f"work: {result['gflop_per_epoch']:.1f} GFLOP per epoch; measured fp32 64x784x512 matmul "
             f"{result['matmul_peak_gflops']:.1f} GFLOP/s",
             f"{'loop':<14} {'epochs':>6} {'s/epoch':>9} {'GFLOP/s':>8} {'accuracy':>9} {'ece':>7}"]
    for r in result["loops"]:
        lines.append(f"{r['loop']:<14} {r['epochs']:>6} {r['s_per_epoch']:>9.3f} {r['gflops']:>8.1f} "
                     f"{r['accuracy']:>9.4f} {r['ece']:>7.4f}")
    for name, ratio, median in ratios(result):
        lines.append(f"speed-up over {name} (its s/epoch / lsbench s/epoch): {ratio:.2f}x"
                     + (f"; median of per-epoch speed-ups {median:.2f}x" if median is not None else ""))
    lines.append(f"peak RSS of this process: {result['peak_rss_mib_total']:.0f} MiB (all loops)")
    return "\n".join(lines)


def methods_table(results: list[dict[str, Any]]) -> str:
    """One line per method: lsbench's and the idiomatic loop's s/epoch and their ratio."""
    lines = [f"{'method':<28} {'lsbench step':<15} {'lsbench s/ep':>12} {'idiomatic s/ep':>14} {'speed-up':>9}"]
    for r in results:
        loops = {x["loop"]: x for x in r["loops"]}
        fast, slow = loops["lsbench"]["s_per_epoch"], loops["idiomatic"]["s_per_epoch"]
        median = dict((n, m) for n, _, m in ratios(r)).get("idiomatic")
        lines.append(f"{r['variant']:<28} {r['fast_step']:<15} {fast:>12.3f} {slow:>14.3f} {slow / fast:>8.2f}x"
                     + (f" (median per epoch {median:.2f}x)" if median is not None else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lsbench.bench", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--model", default="mlp")
    p.add_argument("--data", default=None, help="cache from prepare-data (default results/data/DATASET.npz; "
                                                "made if missing)")
    p.add_argument("--epochs", type=int, default=3, help="lsbench epochs (the first is not timed)")
    p.add_argument("--baseline-epochs", type=int, default=3,
                   help="epochs of each baseline (0: skip; like lsbench's, the first is not timed)")
    p.add_argument("--no-notebook", dest="notebook", action="store_false", help="skip the seed notebook's loop")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="DataLoader workers for the notebook: speeds up accuracy checks, invalidates its timing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epsilon", type=float, default=0.1, help="label smoothing's epsilon (one method)")
    p.add_argument("--methods", default=None, help="'all': every training method at a typical setting "
                   "(each Method's bench_param), lsbench against the idiomatic loop each, in one run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-size", type=int, default=None, help="use the first N test images")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.methods not in (None, "all"):
        p.error(f"--methods {args.methods!r}: only 'all' (or leave it out for one method, --epsilon)")
    if args.methods == "all":
        results = [run(args, name, m.bench_param) for name, m in METHODS.items()]
        print(f"machine: {json.dumps(results[0]['machine'])}\n{args.dataset} x {args.model}, "
              f"{results[0]['n_train']} train images, {args.threads} thread(s)\n{methods_table(results)}", flush=True)
        payload: Any = results
    else:
        payload = run(args)
        print(report(payload), flush=True)
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
