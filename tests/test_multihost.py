"""Two processes joined by jax.distributed train together exactly like one process.

Each process has 2 simulated CPU devices (4 in all, mesh data 2 x model 2: the data axis spans
the processes, the model axis stays inside each) and feeds its half of every global batch of 8.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from multihost_worker import assert_same_training, start_worker, wait_workers

NUM_PROCESSES = 2


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path: Path):
  coordinator = f"127.0.0.1:{free_port()}"
  out, single = tmp_path / "multi.npz", tmp_path / "single.npz"
  logs = [tmp_path / f"process{pid}.log" for pid in range(NUM_PROCESSES)]
  logs.append(tmp_path / "single.log")
  procs = [start_worker(out, 2, data=2, model=2, log=logs[pid], SPOT_JAX_COORDINATOR=coordinator,
                        SPOT_JAX_NUM_PROCESSES=str(NUM_PROCESSES), SPOT_JAX_PROCESS_ID=str(pid))
           for pid in range(NUM_PROCESSES)]
  procs.append(start_worker(single, 1, data=1, model=1, log=logs[-1]))
  wait_workers(procs, logs)

  reference = dict(np.load(single))
  results = [dict(np.load(tmp_path / f"multi.p{pid}.npz")) for pid in range(NUM_PROCESSES)]
  for result in results:
    assert int(result["process_count"]) == NUM_PROCESSES
    assert int(result["device_count"]) == 4 and result["mesh_shape"].tolist() == [2, 2]
    assert {"query_sharded", "shard_contents", "host_batch_size_error"} <= set(
        result["checks"].tolist())
    assert_same_training(result, reference)
  np.testing.assert_array_equal(results[0]["prompt"], results[1]["prompt"])
  np.testing.assert_array_equal(results[0]["losses"], results[1]["losses"])
