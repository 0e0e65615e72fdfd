"""`omnilake bench [suite...]`: run the benchmark suites of a source checkout, each writing
its section of bench/RESULTS.md, then draw a PNG chart of every ratio column found there.

A suite is any `bench/<name>_bench.py` that takes `--results FILE`; `--quick` passes each
suite's small-size arguments (below) for a fast smoke run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from omnilake import errors as E

# Arguments for a quick run (the full run uses each script's defaults).
QUICK = {
    "scan": ["--rows", "500000", "--repeat", "3"],
    "ingest": ["--rows", "200000", "--singles", "300"],
    "encoder": ["--sentences", "300", "--base", "20000"],
    "wire": ["--seconds", "1", "--rows", "20000"],
    "tpch": ["--sf", "0.1", "--repeat", "1"],
    "s3": ["--rows", "300000", "--repeat", "2"],
    "blob": ["--mb", "32", "--count", "2", "--files", "200"],
}


def bench_folder() -> Path:
    for candidate in (Path.cwd() / "bench", Path(__file__).resolve().parent.parent / "bench"):
        if (candidate / "results.py").exists():
            return candidate
    raise E.OperationalError("the benchmark suites live in a source checkout's bench/ folder",
                             hint="run `omnilake bench` from the repository root")


def suites(folder: Path) -> dict[str, Path]:
    return {path.name.removesuffix("_bench.py"): path for path in sorted(folder.glob("*_bench.py"))}


def run(names: list[str], quick: bool, results: Path | None, charts: Path | None, progress) -> int:
    folder = bench_folder()
    known = suites(folder)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise E.InvalidParameterValue(f"unknown suite(s): {', '.join(unknown)}",
                                      hint="suites: " + ", ".join(known))
    chosen = names or list(known)
    results = results or folder / "RESULTS.md"
    bar = progress(len(chosen))
    failed = []
    for name in chosen:
        bar.set_description(f"bench {name}")
        command = [sys.executable, str(known[name]), "--results", str(results)]
        command += QUICK.get(name, []) if quick else []
        start = time.perf_counter()
        done = subprocess.run(command, cwd=folder.parent, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            failed.append(name)
            bar.write(f"{name}: FAILED after {seconds:.0f} s\n{done.stderr[-2000:]}")
        else:
            bar.write(f"{name}: done in {seconds:.0f} s")
        bar.update(1)
    bar.close()
    if charts is not False:
        drawn = draw_charts(results, charts or folder / "charts")
        print(f"results: {results}; charts: {', '.join(str(p) for p in drawn) or 'none'}")
    return 1 if failed else 0


_SECTION = re.compile(r"<!-- section: (?P<key>[^ ]+) -->\n(?P<body>.*?)<!-- end: (?P=key) -->", re.S)
_RATIO = re.compile(r"^\**(\d+(?:\.\d+)?)x\**$")


def ratio_tables(markdown: str) -> dict[str, tuple[str, list[str], dict[str, list[float]]]]:
    """section -> (title, row labels, {ratio column: values}) for Markdown tables whose cells
    read like `1.23x`."""
    found = {}
    for match in _SECTION.finditer(markdown):
        body = match.group("body")
        title = next((line.lstrip("# ").strip() for line in body.splitlines() if line.startswith("#")),
                     match.group("key"))
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in body.splitlines() if line.strip().startswith("|")]
        if len(rows) < 3:
            continue
        header, data = rows[0], [r for r in rows[2:] if len(r) == len(rows[0])]
        columns = {}
        for i, name in enumerate(header[1:], start=1):
            values = [_RATIO.match(r[i]) for r in data]
            if data and sum(v is not None for v in values) >= max(1, len(data) // 2):
                columns[name] = [float(v.group(1)) if v else float("nan") for v in values]
        if columns:
            found[match.group("key")] = (title, [r[0].strip("*") for r in data], columns)
    return found


def draw_charts(results: Path, folder: Path) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install '.[bench]'): no charts")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for key, (title, labels, columns) in ratio_tables(results.read_text()).items():
        figure, axis = plt.subplots(figsize=(min(14, max(6, 0.35 * len(labels) * len(columns) + 2)), 4))
        width = 0.8 / len(columns)
        for n, (name, values) in enumerate(columns.items()):
            axis.bar([i + n * width for i in range(len(labels))], values, width, label=name)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks([i + width * (len(columns) - 1) / 2 for i in range(len(labels))])
        axis.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        axis.set_ylabel("ratio (x)")
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=8)
        figure.tight_layout()
        path = folder / f"{key}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        drawn.append(path)
    return drawn
