"""Bad input on the command line and in study tables gets one clear line, not a traceback; light
commands import neither JAX nor TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT, cli_in_process, small_library
from spot_jax.study import results


def test_cli_bad_input_is_one_line_without_a_traceback(tmp_path, capsys):
  library = small_library(tmp_path, n=1)
  a_file = tmp_path / "file.txt"
  a_file.write_text("x")
  empty = tmp_path / "empty.npy"
  empty.write_bytes(b"")
  results_csv = tmp_path / "r.csv"
  results_csv.write_text("source,target,seed,score\nnone,t,0,50\n")
  bad_gin = tmp_path / "bad.gin"
  bad_gin.write_text("X = (\n")
  cases = [
      (["library", "list", "--library", str(a_file)], "is a file"),
      (["library", "add", "--library", library.root, "--npy", str(empty), "--task", "t",
        "--model_name", "tiny", "--emb_dim", "4", "--fingerprint", "fp"], "empty.npy"),
      (["study", "analyze", str(results_csv), "--out", str(a_file)], "file.txt"),
      (["retrieve", "--library", library.root, "--key", str(empty), "--model", "fp", "--k",
        "0"], "--k must be at least 1"),
      (["train", f"--gin_file={bad_gin}"], "fix the gin syntax"),
  ]
  for argv, message in cases:
    code, out, err = cli_in_process(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert "Traceback" not in err


def test_results_in_fractions_are_refused_and_a_bom_or_zeros_are_read(tmp_path):
  fractions = tmp_path / "f.csv"
  fractions.write_text("source,target,seed,score\nnone,t,0,0.5\na,t,0,0.7\n")
  with pytest.raises(results.StudyTableError, match="look like fractions.*Multiply"):
    results.read_results(str(fractions))
  bom = tmp_path / "bom.csv"
  bom.write_bytes("\ufeffsource,target,seed,score\nnone,t,0,50\na,t,0,70\n".encode())
  assert list(results.read_results(str(bom)).score) == [50.0, 70.0]
  zeros = tmp_path / "z.csv"  # a 0-100 table of zeros is not mistaken for fractions.
  zeros.write_text("source,target,seed,score\nnone,t,0,0\na,t,0,0\n")
  assert list(results.read_results(str(zeros)).score) == [0.0, 0.0]


def test_light_commands_import_neither_jax_nor_tensorflow(tmp_path):
  small_library(tmp_path, n=1)
  code = ("import sys, contextlib, io\nfrom spot_jax.cli import main\n"
          f"for argv in (['--help'], ['tasks', 'list'], ['library', 'list', '--library', "
          f"{str(tmp_path / 'lib')!r}], ['study', 'run', '--help']):\n"
          "  with contextlib.redirect_stdout(io.StringIO()):\n"
          "    try:\n      assert main.main(argv) == 0, argv\n    except SystemExit:\n      pass\n"
          "print(sorted(m for m in ('jax', 'tensorflow', 'seqio', 'scipy') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines()[-1] == "[]"
