"""benchmarks/compare_peft.py's pure parts: the method list, equivalent settings, the table.

No torch or PEFT here: the workers that import them only run under the benchmark.
"""

from __future__ import annotations

import pytest

from benchmarks import compare_peft
from spot_jax import methods


def test_parse_methods_keeps_order_and_refuses_unknown_or_repeated_names():
  assert compare_peft.parse_methods("lora, prompt") == ["lora", "prompt"]
  assert compare_peft.parse_methods(",".join(compare_peft.DEFAULT_METHODS)) == [
      "prompt", "lora", "prefix", "ia3"]
  for bad in ("lora,bitfit", "lora,lora", ""):
    with pytest.raises(SystemExit, match="--methods"):
      compare_peft.parse_methods(bad)


def test_prompt_only_runs_keep_the_prompt_tuning_section():
  assert compare_peft.results_section(["prompt"]) == "compare_peft"
  assert compare_peft.results_section(["prompt", "lora"]) == "compare_peft methods"
  assert compare_peft.results_section(["lora"]) == "compare_peft methods"


def test_our_settings_build_the_method_peft_is_configured_with():
  for name, spec in compare_peft.METHODS.items():
    method = methods.create(name, compare_peft.PROMPT_LENGTH, **spec["ours"])
    config_class, peft_settings = spec["peft"]
    if name == "prompt":
      assert method.length == peft_settings["num_virtual_tokens"] == compare_peft.PROMPT_LENGTH
    if name == "lora":
      assert (method.rank, method.alpha) == (peft_settings["r"], peft_settings["lora_alpha"])
      assert peft_settings["target_modules"] == ["q", "v"]
      assert peft_settings["lora_dropout"] == 0.0  # ours has no LoRA dropout.
    if name == "prefix":
      assert method.length == peft_settings["num_virtual_tokens"]
      assert method.decoder and not method.encoder  # PEFT's T5 placement.
    if name == "ia3":
      assert peft_settings["feedforward_modules"] == ["wo"]
    assert config_class.endswith("Config")


def _row(config: str, method: str, ours: float, peft: float, flops: bool) -> dict:
  def side(examples_per_second, rss):
    out = {"examples_per_second": examples_per_second, "peak_rss_bytes": rss}
    if flops:
      out.update(gflops=2.0 * examples_per_second, ceiling_fraction=0.5)
    return out
  return {"config": config, "method": method, "ratio": ours / peft,
          "step_gflop": 1.0 if flops else None,
          "ours": side(ours, 2 ** 30), "peft": side(peft, 2 ** 31)}


def test_markdown_has_a_row_per_config_and_method_and_a_ratio_per_method():
  rows = [_row("tiny/128", "prompt", 4.0, 2.0, True), _row("tiny/128", "lora", 3.0, 1.0, False),
          _row("small/128", "prompt", 8.0, 1.0, True), _row("small/128", "lora", 1.0, 1.0, False)]
  text = compare_peft.markdown(rows, [{"numpy": 100.0}, {"jax": 120.0}], "cmd")
  table = [line for line in text.splitlines() if line.startswith("| tiny") or
           line.startswith("| small")]
  assert len(table) == 4
  assert table[1].startswith("| tiny/128 | lora | 3.00 | 1.00 | 3.00 | - | - | - | - |")
  assert "1.00 GiB | 2.00 GiB |" in table[1]
  assert "| small/128 | prompt | 8.00 | 1.00 | 8.00 | 16.0 | 2.0 | 50% | 1.0 |" in text
  # Geometric means per method: prompt sqrt(2 * 8) = 4, lora sqrt(3 * 1).
  assert "prompt: geometric mean of ours/PEFT 4.00, lowest 2.00" in text
  assert "lora: geometric mean of ours/PEFT 1.73, lowest 1.00" in text
  assert "small/128 prompt: ours at 50% of the measured matmul ceiling" in text
  assert "at or below PEFT's in 4 of 4 rows" in text
  assert "100 / 120 GFLOP/s" in text
