"""Trajectory throughput: process executor with 1 and 2 workers vs measuring one checkpoint directly.

Makes a 10-checkpoint digits trajectory (random-init models, no training) in a temporary folder and
measures, side by side in one run:

* ``direct``: load one checkpoint + ``landscape.measure`` on the train and test subsets, in this process;
* ``serial``: ``analyse_trajectory(executor="serial")``;
* ``process-1`` / ``process-2``: ``analyse_trajectory(executor="process", workers=1|2)`` with the default
  threads per worker (cores // workers);
* ``process-1x1``: one worker with one thread, to compare 1 and 2 workers at equal threads per worker.

Prints wall times (fastest of ``--repeats``, variants interleaved), the 2-vs-1-worker speed-up, the
per-checkpoint cost relative to ``direct`` (which includes loading each checkpoint twice, hashing it and
writing its result) and the one-off start-up of the process executor's worker server. ``--out`` writes the
table as CSV; ``--from-csv FILE --doc docs/trajectory.md`` writes the throughput block of the docs from it.

    python benchmarks/bench_trajectory.py --n 300 --repeats 3 --out benchmarks/results/trajectory_cpu.csv
    python benchmarks/bench_trajectory.py --from-csv benchmarks/results/trajectory_cpu.csv --doc docs/trajectory.md
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from bench_units import add_doc_options, doc_from_csvs  # noqa: E402 (benchmarks/ is on sys.path as a script)


def make_checkpoints(folder: Path, count: int, arch: str, arch_kwargs: dict) -> list[Path]:
    from landscape import create_model

    paths = []
    for epoch in range(1, count + 1):
        torch.manual_seed(epoch)
        model = create_model(arch, **arch_kwargs)
        path = folder / f"epoch_{epoch}.pt"
        torch.save({"epoch": epoch, "state_dict": model.state_dict(), "best_acc1": 0.0, "best_pgd": 0.0,
                    "best_fgsm": 0.0, "optimizer": {}}, path)
        paths.append(path)
    return paths


DOC_BEGIN, DOC_END = "<!-- throughput:begin (benchmarks/bench_trajectory.py --doc) -->", "<!-- throughput:end -->"
LABELS = {"direct": "direct: load one checkpoint + `measure` on both splits", "serial": "`serial`",
          "process-1": "`process`, 1 worker × all threads", "process-1x1": "`process`, 1 worker × 1 thread",
          "process-2": "`process`, 2 workers × threads // 2"}


def markdown(df) -> str:
    """The throughput block of docs/trajectory.md from the CSV of a run."""
    r0 = df.iloc[0]
    lines = [f"{int(r0.checkpoints)} × {r0.arch} checkpoints, n = {int(r0.n)} per split, PGD-{int(r0.steps)}, "
             f"measures `{r0.measures}`, fastest of {int(r0.repeats)} interleaved repeats, on {r0.machine} "
             f"(torch {r0.torch}, code {r0.commit}):", "",
             "| run | wall s | s / checkpoint | × one direct `measure` |", "|---|---|---|---|"]
    direct = float(df.loc[df["run"] == "direct", "seconds"].iloc[0])
    for r in df.itertuples():
        per = r.seconds if r.run == "direct" else r.seconds / r.checkpoints
        lines.append(f"| {LABELS.get(r.run, r.run)} | {r.seconds:.2f} | {per:.2f} | {per / direct:.2f} |")
    start = float(df["startup"].iloc[0])
    best = dict(zip(df["run"], df["seconds"]))
    lines += ["", f"Process-executor start-up, once per run: {start:.2f} s. Two workers against one: "
              f"{best['process-1'] / best['process-2']:.2f}× (one worker with all threads), "
              f"{best['process-1x1'] / best['process-2']:.2f}× (one single-threaded worker)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=int, default=10)
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--n", type=int, default=200, help="samples per split")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--measures", default="grad,curv_adv,taylor_gap,logit_var")
    p.add_argument("--repeats", type=int, default=2, help="repeat each timing (interleaved) and keep the fastest")
    p.add_argument("--out", default=None, help="write the table as CSV here")
    add_doc_options(p, "throughput")
    args = p.parse_args()
    if args.from_csv:
        doc_from_csvs(args.from_csv, markdown, args.doc, DOC_BEGIN, DOC_END)
        return

    from landscape import measure
    from landscape.checkpoints import load_model
    from landscape.datasets import load_dataset
    from landscape.trajectory import analyse_trajectory

    measures = args.measures.split(",")
    arch_kwargs = {"in_channels": 1, "input_size": 8} if args.arch == "small_cnn" else {}
    settings = {"n": args.n, "steps": args.steps, "eps": 0.1, "measures": measures, "progress": False,
                "arch_kwargs": arch_kwargs}
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"{args.checkpoints} x {args.arch} checkpoints, n={args.n} per split (train+test), "
          f"PGD-{args.steps}, measures {','.join(measures)}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ck = tmp / "ckpt"
        ck.mkdir()
        paths = make_checkpoints(ck, args.checkpoints, args.arch, arch_kwargs)

        def direct() -> None:
            model = load_model(paths[0], args.arch, **arch_kwargs)
            for split in ("train", "test"):
                x, y = load_dataset("digits", split, n=args.n, seed=0)
                measure(model, x, y, eps=0.1, steps=args.steps, measures=measures, seed=0)

        def trajectory(executor: str, workers: int, threads: int | None = None):
            def go() -> None:
                out = tmp / f"out-{executor}-{workers}-{time.perf_counter_ns()}"
                analyse_trajectory(ck, args.arch, out_dir=out, executor=executor, workers=workers, threads=threads,
                                   **settings)
            return go

        variants = {"direct": direct, "serial": trajectory("serial", 1),
                    "process-1": trajectory("process", 1),  # default: 1 worker x all cores' threads
                    "process-1x1": trajectory("process", 1, threads=1),
                    "process-2": trajectory("process", 2)}  # default: 2 workers x cores//2 threads
        direct()  # warm-up (imports, data cache)
        # the process executor's workers fork from a server that imports torch and landscape once per run;
        # time that start-up here (it is then warm for every timed variant below)
        import concurrent.futures as cf

        from landscape.trajectory.executors import mp_context

        t0 = time.perf_counter()
        with cf.ProcessPoolExecutor(1, mp_context=mp_context()) as pool:
            pool.submit(abs, 1).result()
        t_start = time.perf_counter() - t0
        best = {name: float("inf") for name in variants}
        for _ in range(args.repeats):  # interleaved, so load from other processes hits every variant alike
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)

    k = args.checkpoints
    t_direct = best["direct"]
    print(f"{'run':<12} {'wall s':>8} {'s/ckpt':>8} {'x direct':>9}   (fastest of {args.repeats})")
    print(f"{'direct':<12} {t_direct:8.2f} {t_direct:8.2f} {1.0:9.2f}   one checkpoint, in this process")
    for name in ("serial", "process-1", "process-1x1", "process-2"):
        t = best[name]
        print(f"{name:<12} {t:8.2f} {t / k:8.2f} {t / k / t_direct:9.2f}")
    print(f"process executor start-up (once per run, not in the times above): {t_start:.2f} s")
    print(f"speed-up process-2 vs process-1: {best['process-1'] / best['process-2']:.2f}x; "
          f"vs process-1x1 (1 thread per worker in both): {best['process-1x1'] / best['process-2']:.2f}x")
    if args.out:
        import pandas as pd

        from bench_measures import commit  # noqa: E402

        machine = f"{os.cpu_count()}-core CPU, {torch.get_num_threads()} torch threads"
        pd.DataFrame([{"run": name, "seconds": t, "checkpoints": k, "arch": args.arch, "n": args.n,
                       "steps": args.steps, "measures": ",".join(measures), "repeats": args.repeats,
                       "startup": t_start, "machine": machine, "torch": torch.__version__, "commit": commit()}
                      for name, t in best.items()]).to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
