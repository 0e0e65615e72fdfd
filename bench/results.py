"""bench/RESULTS.md holds one section per benchmark; each run replaces only its own."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = "# Benchmark results\n\nLatest numbers; each section says how it was measured.\n"


def write_section(path: str | Path, key: str, text: str) -> None:
    path = Path(path)
    current = path.read_text() if path.exists() else HEADER
    block = f"<!-- section: {key} -->\n{text.rstrip()}\n<!-- end: {key} -->\n"
    pattern = re.compile(rf"<!-- section: {re.escape(key)} -->.*?<!-- end: {re.escape(key)} -->\n",
                         re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current)
    else:
        current = current.rstrip() + "\n\n" + block
    path.write_text(current)
