"""Benchmark: the seed notebook's training loop against lsbench's, in one process, same data/threads.

    python -m lsbench.bench --epochs 3 --baseline-epochs 2

The baseline is the notebook as written: a torchvision-style Dataset doing PIL + ToTensor +
Normalize per sample, a DataLoader (batch 64, shuffle), nn.Sequential, autograd, plain Adam.
lsbench's side is `run_epochs`, the very function the pipeline calls. Both evaluate the test set
after every epoch with the same metric code, and both epoch times include that evaluation.
The two loops run interleaved, one epoch each in turn, so that the host's speed drifting over
minutes (shared machines do) affects both alike; the first epoch of each is not timed.
Printed: seconds per epoch, the throughput ratio, achieved GFLOP/s against a matmul peak
measured here, and peak RSS, with machine and versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from itertools import islice
from typing import Any, Iterator

import torch
from torch import nn

from lsbench.config import TrainConfig
from lsbench.data import Dataset, load_dataset, resolve_dataset
from lsbench.metrics import evaluate_logits
from lsbench.model import MODELS, MLPConfig
from lsbench.provenance import cpu_model
from lsbench.train import DeviceData, configure_cpu, new_state, resolve_device, run_epochs, sync_device


def subset(ds: Dataset, n_train: int | None, n_test: int | None) -> Dataset:
    return Dataset(ds.train_images[:n_train], ds.train_labels[:n_train],
                   ds.test_images[:n_test], ds.test_labels[:n_test], ds.sha256, ds.source)


def flops_per_epoch(cfg: MLPConfig, n_train: int, n_test: int) -> float:
    """Matmul FLOPs: forward + weight gradients for every layer, input gradients for all but the
    first (the input needs none), and one forward over the test set."""
    sizes = (cfg.in_features, *cfg.hidden, cfg.num_classes)
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    train = 2 * n_train * (2 * sum(macs) + sum(macs[1:]))
    return float(train + 2 * n_test * sum(macs))


def matmul_peak_gflops(device: torch.device, batch: int, k: int, n: int, repeats: int = 200) -> float:
    """fp32 GFLOP/s of the model's largest batch matmul (batch x k @ k x n) on this device."""
    a, b = torch.randn(batch, k, device=device), torch.randn(k, n, device=device)
    for _ in range(10):
        a @ b
    sync_device(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync_device(device)
    return 2 * batch * k * n * repeats / (time.perf_counter() - start) / 1e9


class NotebookDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.FashionMNIST + ToTensor + Normalize(0.5, 0.5) do per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i].numpy(), mode="L")), int(self.labels[i])


def notebook_epochs(ds: Dataset, cfg: TrainConfig, epsilon: float, seed: int,
                    device: torch.device, workers: int = 0) -> Iterator[dict[str, Any]]:
    """The seed notebook's loop, unchanged in substance; yields one record per epoch.

    `workers` > 0 only parallelises the per-sample transforms (for accuracy checks over many
    epochs); the notebook itself used 0, which is what timings must use.
    """
    torch.manual_seed(seed)
    train = torch.utils.data.DataLoader(NotebookDataset(ds.train_images, ds.train_labels),
                                        batch_size=cfg.batch_size, shuffle=True, num_workers=workers)
    test = torch.utils.data.DataLoader(NotebookDataset(ds.test_images, ds.test_labels), batch_size=1000)
    m = MODELS[cfg.model]
    sizes = (m.in_features, *m.hidden, m.num_classes)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    model = nn.Sequential(*layers).to(device)
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
        metrics = evaluate_logits(logits.cpu().numpy(), ds.test_labels.numpy(), epsilon)
        sync_device(device)
        yield {"epoch": epoch, **metrics, "epoch_seconds": time.perf_counter() - start}


def machine() -> dict[str, str]:
    info = {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def summarise(name: str, records: list[dict[str, Any]], flops: float, skip_first: bool) -> dict[str, Any]:
    timed = records[1:] if skip_first and len(records) > 1 else records
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    configure_cpu(args.threads)
    device = resolve_device(args.device)
    data_path = Path(args.data)
    ds = load_dataset(data_path) if data_path.exists() else resolve_dataset(None, data_path.parent / "download")
    ds = subset(ds, args.train_size, args.test_size)
    n_train, n_test = len(ds.train_labels), len(ds.test_labels)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, model=args.model,
                      device=args.device, threads=args.threads)
    flops = flops_per_epoch(MODELS[cfg.model], n_train, n_test)
    peak = matmul_peak_gflops(device, cfg.batch_size, MODELS[cfg.model].in_features,
                              (MODELS[cfg.model].hidden or (10,))[0])
    state = new_state(args.seed, cfg, device)
    fast_loop = run_epochs(state, DeviceData.from_dataset(ds, device), args.seed, args.epsilon, cfg)
    base_cfg = TrainConfig(**{**cfg.__dict__, "epochs": args.baseline_epochs})
    slow_loop = notebook_epochs(ds, base_cfg, args.epsilon, args.seed, device, args.loader_workers)
    fast, slow = [], []
    for epoch in range(1, max(cfg.epochs, args.baseline_epochs) + 1):  # one epoch of each in turn
        # Denormal flushing is process-wide: on for lsbench's epochs (it sets it), off for the
        # notebook's, which never did, so each loop runs as it would on its own.
        torch.set_flush_denormal(True)
        fast.extend(islice(fast_loop, 1))
        torch.set_flush_denormal(False)
        slow.extend(islice(slow_loop, 1))
        times = [f"{name} {rs[-1]['epoch_seconds']:.2f} s" for name, rs in (("lsbench", fast), ("notebook", slow))
                 if len(rs) == epoch]
        print(f"epoch {epoch}: " + ", ".join(times), file=sys.stderr, flush=True)  # progress on long runs
    torch.set_flush_denormal(True)
    rows = [summarise("lsbench", fast, flops, skip_first=True)]
    if slow:
        rows.append(summarise("seed notebook", slow, flops, skip_first=True))
    return {"machine": machine(), "device": str(device), "threads": args.threads, "seed": args.seed,
            "interleaved": True,
            "baseline_loader_workers": args.loader_workers, "n_train": n_train,
            "n_test": n_test, "epsilon": args.epsilon, "gflop_per_epoch": flops / 1e9,
            "matmul_peak_gflops": peak, "peak_rss_mib_total": peak_rss_mib(), "loops": rows}


def report(result: dict[str, Any]) -> str:
    lines = [f"machine: {json.dumps(result['machine'])}",
             f"device {result['device']}, {result['threads']} thread(s), {result['n_train']} train / "
             f"{result['n_test']} test images, eps {result['epsilon']}",
             f"work: {result['gflop_per_epoch']:.1f} GFLOP per epoch; measured fp32 batch matmul peak "
             f"{result['matmul_peak_gflops']:.1f} GFLOP/s",
             f"{'loop':<14} {'epochs':>6} {'s/epoch':>9} {'GFLOP/s':>8} {'of peak':>8} {'accuracy':>9} {'ece':>7}"]
    for r in result["loops"]:
        lines.append(f"{r['loop']:<14} {r['epochs']:>6} {r['s_per_epoch']:>9.3f} {r['gflops']:>8.1f} "
                     f"{r['gflops'] / result['matmul_peak_gflops']:>8.0%} {r['accuracy']:>9.4f} {r['ece']:>7.4f}")
    if len(result["loops"]) == 2:
        fast, slow = result["loops"]
        ratio = slow["s_per_epoch"] / fast["s_per_epoch"]
        lines.append(f"speed-up (seed notebook s/epoch / lsbench s/epoch): {ratio:.2f}x")
        if min(fast["epochs"], slow["epochs"]) > 1:
            lines.append(f"median of per-epoch speed-ups: "
                         f"{median_epoch_ratio(slow['epoch_seconds'], fast['epoch_seconds']):.2f}x")
    lines.append(f"peak RSS of this process: {result['peak_rss_mib_total']:.0f} MiB (both loops)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lsbench.bench", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="results/data/fashion_mnist.pt", help="cache from prepare-data (made if missing)")
    p.add_argument("--epochs", type=int, default=3, help="lsbench epochs (the first is not timed)")
    p.add_argument("--baseline-epochs", type=int, default=3,
                   help="seed-notebook epochs (0: skip; like lsbench's, the first is not timed)")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="DataLoader workers for the baseline: speeds up accuracy checks, invalidates its timing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-size", type=int, default=None, help="use the first N test images")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    result = run(args)
    print(report(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
