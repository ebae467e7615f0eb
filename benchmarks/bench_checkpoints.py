"""Cost of the safety checks: ``load_checkpoint`` vs a bare ``torch.load(weights_only=True)``, side by side.

Writes a PreAct ResNet-18 checkpoint in the official AdvLC layout (weights + SGD momentum, about 90 MB) to a
temporary folder and times, interleaved, fastest of ``--repeats``:

* ``torch.load``: ``torch.load(path, map_location="cpu", weights_only=True)``;
* ``load_checkpoint``: the globals listing (``get_unsafe_globals_in_checkpoint``), the dry-run storage-size scan,
  the same ``torch.load`` and the unwrapping;
* ``load_model``: ``load_checkpoint`` plus building ``preact_resnet18`` and loading the weights into it.

Writes ``--csv`` (default ``bench_checkpoints.csv``: variant, seconds, ratio_to_torch_load) and prints it.
Run: ``python benchmarks/bench_checkpoints.py``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def _write(path: Path) -> None:
    from landscape.checkpoints import save_checkpoint
    from landscape.models import create_model

    torch.manual_seed(0)
    model = create_model("preact_resnet18")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    save_checkpoint(path, model, epoch=1, optimizer=opt, best_acc1=0.5, best_pgd=0.3)


def main() -> None:
    from landscape.checkpoints import load_checkpoint, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--csv", default="bench_checkpoints.csv")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_e001.pt"
        _write(path)
        variants = {
            "torch.load": lambda: torch.load(path, map_location="cpu", weights_only=True),
            "load_checkpoint": lambda: load_checkpoint(path),
            "load_model": lambda: load_model(path, "preact_resnet18"),
        }
        best = {name: float("inf") for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
        size_mb = path.stat().st_size / 1e6
    df = pd.DataFrame({"variant": list(best), "seconds": list(best.values())})
    df["ratio_to_torch_load"] = df["seconds"] / best["torch.load"]
    df["file_mb"] = size_mb
    df.to_csv(args.csv, index=False)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
