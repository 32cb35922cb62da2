"""Metrics out of a run: JSON lines, TensorBoard summaries and a console progress display."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping



class MetricsLogger:
  """Appends {"step", "split", metrics...} lines to metrics.jsonl and scalars to TensorBoard.

  On an interactive terminal a progress bar shows loss, examples/s and ETA; otherwise plain
  periodic lines are printed. Only process 0 writes.
  """

  def __init__(self, model_dir: str, total_steps: int, start_step: int, batch_size: int,
               enabled: bool = True, interactive: bool | None = None):
    self.enabled = enabled
    self.batch_size = batch_size
    self.total_steps = total_steps
    self.path = os.path.join(model_dir, "metrics.jsonl")
    self._last_time = time.perf_counter()
    self._last_step = start_step
    self._bar = None
    self._writer = None
    if not enabled:
      return
    from tensorboardX import SummaryWriter
    self._writer = SummaryWriter(os.path.join(model_dir, "tensorboard"))
    interactive = sys.stderr.isatty() if interactive is None else interactive
    if interactive:
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

  def log_train(self, step: int, metrics: Mapping[str, float]) -> None:
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    rate = steps * self.batch_size / max(now - self._last_time, 1e-9)
    eta = (self.total_steps - step) * (now - self._last_time) / steps
    self._last_time, self._last_step = now, step
    self._write(step, "train", dict(metrics, examples_per_second=rate))
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.update(steps)
      self._bar.set_postfix(loss=f"{metrics['loss']:.4f}", ex_s=f"{rate:.1f}")
    else:
      print(f"step {step}/{self.total_steps} loss {metrics['loss']:.4f} "
            f"examples/s {rate:.1f} eta {eta / 60:.1f} min", flush=True)

  def log_eval(self, step: int, results: Mapping[str, Mapping[str, float]]) -> None:
    flat = {f"{task}/{name}": value for task, metrics in results.items()
            for name, value in metrics.items()}
    self._write(step, "validation", flat)
    if self.enabled:
      text = ", ".join(f"{k} {v:.2f}" for k, v in flat.items())
      (self._bar.write if self._bar is not None else print)(f"step {step} eval: {text}")

  def _write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    for name, value in metrics.items():
      self._writer.add_scalar(f"{split}/{name}", value, step)
    self._writer.flush()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._writer is not None:
      self._writer.close()
