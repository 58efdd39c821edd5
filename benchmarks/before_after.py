"""Call time and peak memory of this checkout's artifacts against an older commit's, measured alternately.

Each measurement is one ``compare.py --worker`` process (the same worker
``compare.py`` runs: warm-up calls, then the median of timed
``load_model(...).predict`` calls, and the process's peak RSS). For every
(model, engine, structure) the older and the newer worker run one after the
other, in the order before/after in even rounds and after/before in odd
ones, so that both see the same machine load; the 1-minute load average at
each start is recorded. The older commit runs from its own checkout (for
example ``git worktree add ../before <commit>``) through a package layout
made in a temporary folder, with artifacts it exported itself from the same
random-weight checkpoints (``--before-work``; made there if missing).

    python benchmarks/before_after.py --before-tree ../before --before-work ../before-work \\
        --work ../after-work --engines onnx,aoti --rounds 2 --threads 2 --out OUT
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import compare

HERE = Path(__file__).resolve().parent
QUICK_STRUCTURES = ["slab_81", "bulk_1008"]
MEMORY_LIMIT_GB = 22.0


def package_layout(tree: Path, folder: Path) -> Path:
    """A folder holding ``ocpdeploy/{exporter,runtime}`` as links into ``tree``, for PYTHONPATH."""
    package = folder / "ocpdeploy"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for part in ("exporter", "runtime"):
        link = package / part
        if not link.exists():
            link.symlink_to(tree / part)
    return folder


def export_in(tree_path: Optional[Path], checkpoint: Path, output: Path, format: str) -> None:
    """Export ``checkpoint`` with the code of ``tree_path`` (None: this checkout) unless ``output`` exists."""
    if output.is_file():
        return
    code = f"from ocpdeploy.exporter import export_checkpoint; export_checkpoint({str(checkpoint)!r}, {str(output)!r}, format={format!r})"
    env = dict(os.environ)
    if tree_path is not None:
        env["PYTHONPATH"] = str(tree_path)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(output.parent))
    print(f"exported {output.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def run(script: Path, task: Dict[str, Any], python_path: Optional[Path]) -> Dict[str, Any]:
    """One worker process of ``script`` (a compare.py); killed above MEMORY_LIMIT_GB of RSS."""
    env = dict(os.environ)
    if python_path is not None:
        env["PYTHONPATH"] = str(python_path)
    command = [sys.executable, str(script), "--worker", json.dumps(task)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(script.parent), env=env)
    peak = 0
    while process.poll() is None:
        peak = max(peak, compare._process_rss_bytes(process.pid))
        if peak > MEMORY_LIMIT_GB * compare.BYTES_PER_GB:
            process.kill()
            process.wait()
            return {"failed": f"killed above {MEMORY_LIMIT_GB:.0f} GB RSS"}
        time.sleep(compare.RSS_POLL_SECONDS)
    stdout, stderr = process.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        return {"failed": (stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


def _commit(tree: Path) -> str:
    """Short commit id of the checkout ``tree`` (with ``+changes`` when its tracked files differ from it)."""
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(tree), "diff", "--quiet", "HEAD"]).returncode != 0
    return (commit or "unknown") + ("+changes" if dirty else "")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def render(rows: List[Dict[str, Any]], header: List[str]) -> str:
    """Markdown: one line per (model, structure, engine) with every round's times and the median ratio."""
    lines = header + [
        "",
        "| model | structure | engine | before (s) | after (s) | after / before, per round | median ratio | peak RSS before / after (GiB) | load at starts |",
        "|---|---|---|---|---|---|---:|---|---|",
    ]
    keys = sorted({(r["model"], r["structure"], r["engine"]) for r in rows}, key=lambda k: (k[1], k[0], k[2]))
    for key in keys:
        mine = [r for r in rows if (r["model"], r["structure"], r["engine"]) == key]
        rounds = sorted({r["round"] for r in mine})
        before = {r["round"]: r for r in mine if r["side"] == "before"}
        after = {r["round"]: r for r in mine if r["side"] == "after"}

        def secs(row: Dict[str, Any]) -> str:
            return f"{row['seconds']:.3f}" if "seconds" in row else row.get("failed", "-")

        ratios = [after[i]["seconds"] / before[i]["seconds"] for i in rounds if "seconds" in after.get(i, {}) and "seconds" in before.get(i, {})]
        rss = [f"{before[i].get('peak_rss_gb', float('nan')):.2f} / {after[i].get('peak_rss_gb', float('nan')):.2f}" for i in rounds if i in before and i in after]
        loads = [f"{before[i]['load']:.1f}, {after[i]['load']:.1f}" for i in rounds if i in before and i in after]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {', '.join(secs(before[i]) for i in rounds if i in before)} | "
            f"{', '.join(secs(after[i]) for i in rounds if i in after)} | {', '.join(f'{x:.2f}' for x in ratios) or '-'} | "
            f"{statistics.median(ratios):.2f} | {'; '.join(rss)} | {'; '.join(loads)} |"
            if ratios
            else f"| {key[0]} | {key[1]} | {key[2]} | {', '.join(secs(before[i]) for i in rounds if i in before)} | "
            f"{', '.join(secs(after[i]) for i in rounds if i in after)} | - | - | {'; '.join(rss)} | {'; '.join(loads)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-tree", required=True, help="checkout of the older commit")
    parser.add_argument("--before-work", required=True, help="folder for the older commit's artifacts")
    parser.add_argument("--work", required=True, help="folder for this checkout's artifacts and the shared checkpoints")
    parser.add_argument("--models", default=",".join(compare.MODELS))
    parser.add_argument("--structures", default=",".join(QUICK_STRUCTURES))
    parser.add_argument("--engines", default="onnx,aoti")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    before_tree = Path(args.before_tree).resolve()
    before_work = Path(args.before_work).resolve()
    work = Path(args.work).resolve()
    out = Path(args.out)
    for folder in (before_work, work, out):
        folder.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    engines = args.engines.split(",")
    layout = package_layout(before_tree, Path(tempfile.mkdtemp(prefix="before-layout-")))
    paths = compare.prepare_artifacts(work, models, engines)
    for model in models:
        for engine in engines:
            export_in(layout, Path(paths[model]["checkpoint"]), before_work / f"{model}{compare.ARTIFACT_SUFFIXES[engine]}", engine)

    rows: List[Dict[str, Any]] = []
    for structure in args.structures.split(","):
        repeats = compare._repeats(structure)
        for model in models:
            for engine in engines:
                for round_index in range(args.rounds):
                    sides = ("before", "after") if round_index % 2 == 0 else ("after", "before")
                    for side in sides:
                        task: Dict[str, Any] = {"engine": engine, "structure": structure, "threads": args.threads, "repeats": repeats, "checkpoint": paths[model]["checkpoint"]}
                        if side == "before":
                            task["artifact"] = str(before_work / f"{model}{compare.ARTIFACT_SUFFIXES[engine]}")
                            script, python_path = before_tree / "benchmarks" / "compare.py", layout
                        else:
                            task["artifact"] = paths[model][engine]
                            task["graph_program"] = paths[model].get(f"{engine}_graph")
                            script, python_path = HERE / "compare.py", None
                        load = load_average()
                        started = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
                        result = run(script, task, python_path)
                        row = {"model": model, "structure": structure, "engine": engine, "round": round_index, "side": side, "load": load, "start_utc": started, **result}
                        rows.append(row)
                        print(json.dumps(row), flush=True)

    command = "python benchmarks/before_after.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [
        f"Machine: {compare.machine_description(args.threads)}; fp32 matmul peak {compare.matmul_peak_gflops(args.threads):.0f} GFLOP/s (torch.mm 4096^2).",
        f"Date: {datetime.date.today().isoformat()}. Command: `{command}`.",
        f"Before: commit {_commit(before_tree)}; after: commit {_commit(HERE.parent)}. Each cell is one worker process's median call time; rounds alternate the order.",
    ]
    (out / "before_after.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    (out / "before_after.md").write_text(render(rows, header))
    print(render(rows, header))


if __name__ == "__main__":
    main()
