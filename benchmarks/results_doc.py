"""Write benchmark numbers from benchmarks/results/*.csv into the docs: the GPU trajectory and slice/autocast
block of docs/measures.md and the performance summary of README.md.

Run after copying a device run's CSVs into benchmarks/results/ (see benchmarks/run_gpu.sh):

    python benchmarks/results_doc.py
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
BEGIN, END = "<!-- gpu-results:begin (benchmarks/results_doc.py) -->", "<!-- gpu-results:end -->"
README_BEGIN, README_END = "<!-- performance:begin (benchmarks/results_doc.py) -->", "<!-- performance:end -->"


def _units(frame: pd.DataFrame, model: str, item: str) -> float:
    return float(frame.loc[(frame["model"] == model) & (frame["item"] == item), "units"].iloc[0])


def _code(frame: pd.DataFrame) -> str:
    """The commit a result CSV was measured with (CSVs from before the commit column: the Lanczos code)."""
    if "commit" in frame and frame["commit"].notna().any():
        return str(frame["commit"].dropna().iloc[0])
    return "before 16c7057"


def _accuracy(frame: pd.DataFrame) -> str:
    """eig_top's float32 error against dense Hessians, median / max, for the default solver."""
    f32 = frame[frame["dtype"] == "float32"]
    if "solver" in f32:
        f32 = f32[f32["solver"] != "lanczos"] if (f32["solver"] != "lanczos").any() else f32
    r = f32.iloc[0]
    text = f"{r.median_rel_err:.1e} / {r.max_rel_err:.1e}"
    if "max_rel_err_in_batch" in f32:
        text += f" ({r.median_rel_err_in_batch:.1e} / {r.max_rel_err_in_batch:.1e} in-batch)"
    return text + f", {r.get('solver', 'lanczos')}"


def readme_block(results: Path) -> list[str]:
    """One row per benchmark goal, one column per machine, every number read from the result CSVs."""
    cpu, gpu = pd.read_csv(results / "units_cpu.csv"), pd.read_csv(results / "units_h200.csv")
    hs_cpu, hs_gpu = pd.read_csv(results / "hs_cpu.csv"), pd.read_csv(results / "hs_h200.csv")
    acc_cpu = pd.read_csv(results / "measures_accuracy_cpu.csv")
    acc_gpu = pd.read_csv(results / "measures_accuracy_h200.csv")
    sl = pd.read_csv(results / "slices_h200.csv")
    tr = pd.read_csv(results / "trajectory_h200.csv")
    tv = dict(zip(tr["quantity"], tr["value"]))
    cpu_name, gpu_name = cpu["device"].iloc[0], gpu["device"].iloc[0]

    def ratio(frame, model):
        return f"{_units(frame, model, 'default') / _units(frame, model, 'pgd10'):.2f}×"

    def hs(frame, case):
        r = frame[frame["case"].str.startswith(case)].iloc[0]
        solver = r["solver"] if "solver" in r and isinstance(r["solver"], str) else "lanczos"
        return f"{r.speedup:.1f}× (batch {r.batch}, {solver}), {100 * r.rel_diff_lanczos_official:.1f} % apart"

    rows = [
        f"| benchmark | dev CPU ({cpu_name}, torch {cpu['torch'].iloc[0]}, code {_code(cpu)}) | "
        f"{gpu_name} (torch {gpu['torch'].iloc[0]}, code {_code(gpu)}) |",
        "|---|---|---|",
        f"| default `measure()` table ÷ PGD-10 attack, small_cnn (goal ≤ 2×) | {ratio(cpu, 'small_cnn')} | "
        f"{ratio(gpu, 'small_cnn')} |",
        f"| same, preact_resnet18 3×32×32 | {ratio(cpu, 'preact_resnet18')} | {ratio(gpu, 'preact_resnet18')} |",
        f"| `eig_top` in input gradients, small_cnn / preact_resnet18 (goal ≤ 15) | "
        f"{_units(cpu, 'small_cnn', '+eig_top'):.1f} / {_units(cpu, 'preact_resnet18', '+eig_top'):.1f} | "
        f"{_units(gpu, 'small_cnn', '+eig_top'):.1f} / {_units(gpu, 'preact_resnet18', '+eig_top'):.1f} |",
        f"| `eig_top` float32 relative error vs dense Hessians, median / max (goal 1e-3 / 1e-2) | "
        f"{_accuracy(acc_cpu)} | {_accuracy(acc_gpu)} |",
        f"| `hs` vs the official deflated power iteration, digits (goal ≥ 10×, within 2 %) | "
        f"{hs(hs_cpu, 'small_cnn')} | {hs(hs_gpu, 'small_cnn')} |",
        f"| same, preact_resnet18 | {hs(hs_cpu, 'preact')} | {hs(hs_gpu, 'preact')} |",
        "| `slice_2d` throughput ÷ raw batched forward, small_cnn / preact_resnet18 (goal ≥ 0.85) | — | "
        + " / ".join(f"{r.slice / r.forward:.2f}" for r in sl.itertuples()) + " |",
        f"| trajectory: seconds per preact_resnet18 checkpoint, n = {int(tv['n'])}, default measures + hs | — | "
        f"{tv['seconds_per_checkpoint']:.2f} s ({100 * tv['waiting_for_reads_share']:.1f} % waiting for reads, "
        f"{tv['gpu_memory_peak']:.1f} GiB peak) |",
    ]
    return rows


def trajectory_block(path: Path) -> list[str]:
    t = pd.read_csv(path)
    v = dict(zip(t["quantity"], t["value"]))
    first = t.iloc[0]
    return [
        f"Trajectory ({path.name}): {int(v['checkpoints'])} × {first['arch']} checkpoints, n = {int(v['n'])} "
        f"CIFAR-size inputs, measures {first['measures']}, {first['executor']} executor, on {first['device_name']} "
        f"(torch {first['torch']}):",
        "",
        "| seconds per checkpoint | compute ÷ PGD-10 floor | waiting for reads | GPU memory peak | 1D slices best+last |",
        "|---|---|---|---|---|",
        f"| {v['seconds_per_checkpoint']:.2f} s | {v['compute_over_pgd10']:.1f}× | "
        f"{100 * v['waiting_for_reads_share']:.1f} % | {v['gpu_memory_peak']:.2f} GiB | {v['slices_best_last']:.2f} s |",
    ]


def slices_block(path: Path) -> list[str]:
    s = pd.read_csv(path)
    rows = ["", f"Slices ({path.name}, {s['device'].iloc[0]}, torch {s['torch'].iloc[0]}): `slice_2d` throughput "
            "÷ raw batched forward, and autocast for loss values (an option only if every loss is within 1e-2 "
            "relative or 1e-3 absolute of float32 and ≥ 1.2× faster):", "",
            "| case | slice_2d ÷ forward | bf16 max rel. error | bf16 speed-up | fp16 max rel. error | fp16 speed-up |",
            "|---|---|---|---|---|---|"]
    for r in s.itertuples():
        rows.append(f"| {r.case} | {r.slice / r.forward:.2f} | {r.bf16_max_rel_err:.1e} | {r.bf16_speedup:.2f}× | "
                    f"{r.fp16_max_rel_err:.1e} | {r.fp16_speedup:.2f}× |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--doc", default="docs/measures.md")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--trajectory", default=str(RESULTS / "trajectory_h200.csv"))
    p.add_argument("--slices", default=str(RESULTS / "slices_h200.csv"))
    args = p.parse_args()
    block = "\n".join([BEGIN, *trajectory_block(Path(args.trajectory)), *slices_block(Path(args.slices)), END])
    _replace(Path(args.doc), BEGIN, END, block, "\n\n## On a GPU\n\n")
    readme = "\n".join([README_BEGIN, *readme_block(RESULTS), README_END])
    _replace(Path(args.readme), README_BEGIN, README_END, readme, None)


def _replace(doc: Path, begin: str, end: str, block: str, heading: str | None) -> None:
    text = doc.read_text()
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    elif heading is not None:
        text = text.rstrip() + heading + block + "\n"
    else:
        raise SystemExit(f"{doc} has no {begin} marker")
    doc.write_text(text)
    print(f"updated {doc}")


if __name__ == "__main__":
    main()
