"""Real text embeddings for the vector benchmark: sentences from the docstrings of the Python
modules installed here (the standard library first), embedded with OmniLake's built-in
all-MiniLM-L6-v2 (384 dimensions, unit length).

Usage: python bench/text_embeddings.py --rows 100000 --queries 200 --out bench/.data/minilm.npz
then:  python bench/vector_bench.py --vectors bench/.data/minilm.npz
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re
import sys
import sysconfig
import time

import numpy as np

from omnilake.gpu.encoder import TextEncoder
from omnilake.gpu.models import fetch

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstring_sentences(limit: int) -> list[str]:
    """Distinct sentences of 6 to 60 words from module, class and function docstrings."""
    roots = [pathlib.Path(sysconfig.get_paths()["stdlib"]), pathlib.Path(sysconfig.get_paths()["purelib"])]
    seen: dict[str, None] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                         ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for paragraph in doc.split("\n\n"):
                    flat = " ".join(paragraph.split())
                    for sentence in SENTENCE_END.split(flat):
                        if 6 <= len(sentence.split()) <= 60 and sentence[0].isalpha():
                            seen[sentence] = None
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", default="bench/.data/minilm.npz")
    args = parser.parse_args()
    texts = docstring_sentences(args.rows + args.queries)
    if len(texts) < args.rows + args.queries:
        sys.exit(f"only {len(texts)} sentences found; ask for fewer rows")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    queries = [texts[i] for i in order[:args.queries]]  # held out of the table
    base = [texts[i] for i in order[args.queries:args.queries + args.rows]]
    encoder = TextEncoder(fetch("minilm"), batch_size=64)
    started = time.perf_counter()
    vectors = encoder.encode(base)
    print(f"embedded {len(base):,} sentences in {time.perf_counter() - started:.0f} s", flush=True)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, base=vectors, queries=encoder.encode(queries),
             base_text=np.array(base), query_text=np.array(queries))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
