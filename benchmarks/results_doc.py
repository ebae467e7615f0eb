"""Write the GPU trajectory and slice/autocast numbers of benchmarks/results/*.csv into docs/measures.md.

Run after copying a device run's CSVs into benchmarks/results/ (see benchmarks/run_gpu.sh):

    python benchmarks/results_doc.py --doc docs/measures.md
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
BEGIN, END = "<!-- gpu-results:begin (benchmarks/results_doc.py) -->", "<!-- gpu-results:end -->"


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
    p.add_argument("--trajectory", default=str(RESULTS / "trajectory_h200.csv"))
    p.add_argument("--slices", default=str(RESULTS / "slices_h200.csv"))
    args = p.parse_args()
    block = "\n".join([BEGIN, *trajectory_block(Path(args.trajectory)), *slices_block(Path(args.slices)), END])
    doc = Path(args.doc)
    text = doc.read_text()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## On a GPU\n\n" + block + "\n"
    doc.write_text(text)
    print(f"updated {doc}")


if __name__ == "__main__":
    main()
