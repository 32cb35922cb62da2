"""Exact top-k retrieval over pooled keys on ONE CPU core: query latency, build time, memory.

  python -m benchmarks.retrieval                       # N = 10K, 100K, 1M keys of dim 768
  python -m benchmarks.retrieval --sizes 10000 --queries 50 --json /tmp/retrieval.jsonl

Pins the process to its first allowed CPU (and every thread pool to one thread) before numpy or
JAX are imported, builds synthetic float32 keys [N, embed], and per pooled metric times
`KeyIndex.build` and `KeyIndex.search(query, k)` (median and p90 over the queries, after one
warm-up query that also compiles the JAX reduction). Manhattan is timed with both backends.
Index memory is the index's own arrays; peak RSS is the process's (ru_maxrss) so far. Prints a
markdown table and appends one JSON line per (N, metric, backend) to --json.
"""

from __future__ import annotations

import os

CPU = sorted(os.sched_getaffinity(0))[0]
os.sched_setaffinity(0, {CPU})
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
  os.environ[_var] = "1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

import numpy as np  # noqa: E402

from spot_jax.library.retrieval import KeyIndex  # noqa: E402
from benchmarks.timing import peak_rss_bytes

CASES = (("cosine", "numpy"), ("per_token_cosine", "numpy"), ("euclidean", "numpy"),
         ("manhattan", "jax"), ("manhattan", "numpy"))


def synthetic_keys(n: int, dim: int, seed: int) -> np.ndarray:
  """[n, dim] float32 mean-pooled-like keys (a shared offset plus noise), made in chunks."""
  rng = np.random.default_rng(seed)
  offset = rng.normal(0.0, 0.5, dim).astype(np.float32)
  keys = np.empty((n, dim), np.float32)
  for start in range(0, n, 65536):
    stop = min(n, start + 65536)
    keys[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    keys[start:stop] += offset
  return keys


def bench_case(keys: np.ndarray, queries: np.ndarray, metric: str, backend: str,
               k: int) -> dict:
  start = time.perf_counter()
  index = KeyIndex.build(keys, metric, manhattan_backend=backend)
  build_s = time.perf_counter() - start
  index.search(queries[0], k)  # warm-up (and JAX compilation).
  times = []
  for query in queries[1:]:
    start = time.perf_counter()
    index.search(query, k)
    times.append(time.perf_counter() - start)
  result = {"n": int(keys.shape[0]), "dim": int(keys.shape[1]), "metric": metric,
            "backend": backend if metric == "manhattan" else "numpy", "k": k,
            "queries": len(times), "median_s": float(np.median(times)),
            "p90_s": float(np.percentile(times, 90)), "build_s": build_s,
            "index_bytes": index.nbytes}
  del index
  result["peak_rss_bytes"] = peak_rss_bytes()
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
  parser.add_argument("--dim", type=int, default=768)
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--queries", type=int, default=21, help="timed queries + 1 warm-up")
  parser.add_argument("--metrics", nargs="+", default=None,
                      help="only these metrics (default all pooled ones)")
  parser.add_argument("--json", default=os.path.join(HERE, "results", "retrieval.jsonl"))
  parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"),
                      help="markdown file whose `retrieval` section gets the table ('' = none)")
  args = parser.parse_args()
  if args.queries < 2:
    parser.error("--queries must be at least 2 (one warm-up, one timed)")
  host = {"cpu": platform.processor() or platform.machine(), "pinned_cpu": CPU,
          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
  rows = []
  table = [f"Pinned to CPU {CPU}; exact top-{args.k}, keys [N, {args.dim}] float32, "
           f"{args.queries - 1} timed queries.", "",
           "| N | metric | backend | median ms | p90 ms | build s | index MiB | peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|"]
  print("\n".join(table))
  for n in args.sizes:
    keys = synthetic_keys(n, args.dim, seed=n)
    queries = synthetic_keys(args.queries, args.dim, seed=n + 1)
    for metric, backend in CASES:
      if args.metrics and metric not in args.metrics:
        continue
      row = {**bench_case(keys, queries, metric, backend, args.k), **host}
      rows.append(row)
      table.append(f"| {n:,} | {metric} | {row['backend']} | {row['median_s'] * 1e3:.1f} | "
                   f"{row['p90_s'] * 1e3:.1f} | {row['build_s']:.2f} | "
                   f"{row['index_bytes'] / 2**20:.0f} | {row['peak_rss_bytes'] / 2**20:.0f} |")
      print(table[-1], flush=True)
    del keys
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "a") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
    print(f"\nAppended {len(rows)} results to {args.json}")
  if args.results:
    from benchmarks.results_md import update_section
    command = "python -m benchmarks.retrieval " + shlex.join(sys.argv[1:])
    update_section(args.results, "retrieval",
                   "## Retrieval latency (exact top-k, one CPU core)\n\n"
                   f"Command: `{command}`\n\n" + "\n".join(table) + "\n")


if __name__ == "__main__":
  main()
