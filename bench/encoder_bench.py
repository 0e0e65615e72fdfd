"""Embedding and top-k kernels: OmniLake vs the reference implementations, in one run.

Encoder: sentences/s of OmniLake's all-MiniLM-L6-v2 (NumPy or CuPy backend) against
sentence-transformers on PyTorch (CPU) at the same batch sizes, with the cosine agreement of the
outputs. sentence-transformers is optional: install it for the comparison with
    pip install torch==2.13.0 sentence-transformers
Top-k: exact k-nearest search of OmniLake's kernel against faiss IndexFlat (brute force).

Usage: python bench/encoder_bench.py [--device cpu|gpu|auto] [--sentences 2000] [--base 200000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time

import numpy as np

from omnilake.gpu import Prepared, get_backend, topk
from omnilake.gpu.encoder import TextEncoder
from omnilake.gpu.models import fetch

WORDS = ("pump sensor invoice temperature pressure valve motor bearing order customer delivery "
         "warehouse shipment payment overdue alarm threshold vibration humidity voltage").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 40, n)  # words: short log lines to short paragraphs
    return [" ".join(rng.choice(WORDS, k)) + "." for k in lengths]


def rate(fn, items: int, repeat: int = 2) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeat))
    return items / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def encoder_rows(device: str, n: int, batch_sizes: list[int],
                 reference_device: str = "cpu") -> list[tuple]:
    path = fetch("minilm")
    texts = sentences(n)
    backend = get_backend(device)
    try:
        from sentence_transformers import SentenceTransformer
        reference = SentenceTransformer(str(path), device=reference_device)
    except Exception as error:  # not installed, or cannot load the model: measure ours alone
        reference = None
        print(f"no sentence-transformers reference ({error}): measuring OmniLake alone",
              file=sys.stderr)
    rows = []
    for batch in batch_sizes:
        ours = TextEncoder(path, backend=backend, batch_size=batch)
        ours_rate = rate(lambda enc=ours: enc.encode(texts), n)
        line = [batch, ours_rate, None, None]
        if reference is not None:
            ref_rate = rate(lambda b=batch: reference.encode(texts, batch_size=b), n)
            a, b = ours.encode(texts[:200]), reference.encode(texts[:200], batch_size=batch)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            line[2], line[3] = ref_rate, float(cos.min())
        rows.append(tuple(line))
        print(f"batch {batch}: omnilake {ours_rate:.0f}/s"
              + (f", sentence-transformers {line[2]:.0f}/s" if line[2] else ""), file=sys.stderr)
    return rows


def topk_rows(device: str, n_base: int, dims: int, k: int) -> list[tuple]:
    import faiss
    rng = np.random.default_rng(1)
    base = rng.normal(size=(n_base, dims)).astype(np.float32)
    backend = get_backend(device)
    data = Prepared(base, backend)  # on the device with their norms, as a table's would be
    rows = []
    for n_queries in (1, 100):
        queries = rng.normal(size=(n_queries, dims)).astype(np.float32)
        ours = rate(lambda qs=queries: topk(qs, data, k, "l2", backend=backend), n_queries, repeat=3)
        index = faiss.IndexFlatL2(dims)
        index.add(base)
        theirs = rate(lambda ix=index, qs=queries: ix.search(qs, k), n_queries, repeat=3)
        d_ours, i_ours = topk(queries, data, k, "l2", backend=backend)
        _, i_faiss = index.search(queries, k)
        agree = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(i_ours, i_faiss)]))
        rows.append((n_queries, ours, theirs, agree))
        print(f"top-{k} over {n_base:,}x{dims}, {n_queries} queries/call: omnilake {ours:.0f} q/s, "
              f"faiss {theirs:.0f} q/s, overlap {agree:.3f}", file=sys.stderr)
    return rows


def report(device: str, backend_name: str, enc, top, n_base: int, dims: int, k: int,
           reference_device: str = "cpu") -> str:
    card = "CPU"
    if backend_name == "cupy":
        import cupy
        card = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    lines = [f"## Embeddings and top-k kernel ({dt.date.today()}, {card})", "",
             f"{os.cpu_count()} cores, {platform.machine()}, backend {backend_name} "
             f"(device={device}). Command: `python bench/encoder_bench.py --device {device} "
             f"--reference-device {reference_device}`."]
    if enc:
        lines += ["", f"| batch | OmniLake sentences/s | sentence-transformers (PyTorch "
                  f"{reference_device}) sentences/s | ratio | min cosine |", "|---:|---:|---:|---:|---:|"]
    for batch, ours, theirs, cos in enc:
        if theirs:
            lines.append(f"| {batch} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} | {cos:.5f} |")
        else:
            lines.append(f"| {batch} | {ours:.0f} | not installed | | |")
    held = " prepared once (squared lengths kept" + (", held on the GPU)" if backend_name == "cupy" else ")")
    lines += ["", f"Exact top-{k} (L2) over {n_base:,} x {dims} float32 vectors{held}:", "",
              "| queries per call | OmniLake queries/s | faiss IndexFlatL2 queries/s | ratio | result overlap |",
              "|---:|---:|---:|---:|---:|"]
    lines += [f"| {nq} | {o:.0f} | {f:.0f} | {o / f:.2f} | {a:.3f} |" for nq, o, f, a in top]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--reference-device", default="cpu",
                        help="PyTorch device of the sentence-transformers reference (cpu, cuda)")
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--base", type=int, default=200_000)
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", default=None, help="also write the Markdown table to this file")
    parser.add_argument("--results", default=None, help="update this section in a RESULTS.md")
    args = parser.parse_args()
    enc = encoder_rows(args.device, args.sentences, [int(b) for b in args.batch_sizes.split(",")],
                       args.reference_device) if args.sentences else []  # 0: top-k only
    top = topk_rows(args.device, args.base, args.dims, args.k)
    text = report(args.device, get_backend(args.device).name, enc, top, args.base, args.dims, args.k,
                  args.reference_device)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    if args.results:
        from results import write_section
        write_section(args.results, f"encoder-{get_backend(args.device).name}", text)


if __name__ == "__main__":
    main()
