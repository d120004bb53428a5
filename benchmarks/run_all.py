"""Every benchmark, one after the other, into one Markdown file: ``make bench``.

    python benchmarks/run_all.py                          # all, default sizes
    python benchmarks/run_all.py --only nextitem journeys_models
    python benchmarks/run_all.py --out bench.md

Each ``benchmarks/bench_<name>.py`` runs in its own process with its defaults (one at a
time: they would share the cores otherwise); its printed tables go under its heading, and
one summary table lists every benchmark with its wall time and exit status. The file
opens with what the figures depend on: the commit, the CPU, the cores and the memory.
Benchmarks print their own peers' figures (DuckDB, the plain loop, HF's full logits...),
so every table compares within one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def machine() -> list[str]:
    """Lines saying what the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total = next((line.split()[1] for line in meminfo.read_text().splitlines() if line.startswith("MemTotal")), "")
        memory = f"{int(total) / 2**20:.1f} GiB" if total else ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    now = dt.datetime.now(dt.timezone.utc)
    return [
        f"* commit: `{commit.stdout.strip() or 'unknown'}`; date (UTC): {now:%Y-%m-%d %H:%M}",
        f"* CPU: {cpu}; cores: {os.cpu_count()}; memory: {memory or 'unknown'}; Python {platform.python_version()}",
    ]


def main(argv: list[str] | None = None) -> int:
    names = sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=names, default=names, help="benchmarks to run (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file (default: benchmarks/results-<date>.md)")
    args = parser.parse_args(argv)
    out = args.out or HERE / f"results-{dt.date.today().isoformat()}.md"
    sections, summary = [], []
    for name in args.only:
        command = [sys.executable, str(HERE / f"bench_{name}.py")]
        print(f"bench {name}: running {' '.join(command[1:])}", flush=True)
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        print(f"bench {name}: {status} in {wall:.0f} s", flush=True)
        summary.append(f"| `{name}` | {wall:,.0f} | {status} |")
        body = done.stdout.strip() or "(no output)"
        if done.returncode != 0:
            body += "\n\nstderr (last lines):\n\n" + "\n".join(done.stderr.strip().splitlines()[-15:])
        sections.append(f"## {name}\n\n`python benchmarks/bench_{name}.py`\n\n{body}\n")
    text = "\n".join(
        [
            "# custembed benchmarks",
            "",
            *machine(),
            "",
            "| benchmark | wall s | status |",
            "| --- | --- | --- |",
            *summary,
            "",
            *sections,
        ]
    )
    out.write_text(text)
    print(f"wrote {out}")
    return 0 if all(line.endswith("| ok |") for line in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
