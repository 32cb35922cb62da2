"""Every parameter-efficient method: hooks, init, compiled step, run directory, resume, learning."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hlo_util import dot_output_shapes
from spot_jax import methods
from spot_jax.models import prompts
from spot_jax.models import T5, get_config
from tasks.lookup import register_all_tasks
from spot_jax.train import run_dir
from spot_jax.train.loop import TrainConfig, train
from spot_jax.train.optimizer import adamw_warmup
from spot_jax.train.step import init_train_state, make_train_step

register_all_tasks()
# The parameter-efficient methods (full fine-tuning, `model`, has its own tests:
# tests/test_model_tuning.py).
NAMES = sorted(n for n, cls in methods.METHODS.items() if not cls.full)
STEP0_IS_FROZEN = ("bias", "ia3", "lora")
# Distinct dims so a frozen-weight gradient would show up as a product of a kernel's shape.
ODD = dict(vocab_size=72, emb_dim=24, num_heads=2, head_dim=10, mlp_dim=36, dropout_rate=0.0)
SETTINGS = {"prefix": {"length": 3, "decoder": True}, "lora": {"rank": 3}}


_FROZEN = {}


def frozen_params(config):
  """The random frozen model of `config`: one init (one compilation) per config per module."""
  key = repr(config)
  if key not in _FROZEN:
    tokens = jnp.ones((1, 4), jnp.int32)
    _FROZEN[key] = jax.jit(T5(config).init)(jax.random.PRNGKey(0), tokens, tokens)["params"]
  return _FROZEN[key]


def make(name: str, config, prompt_length: int = 4):
  method = methods.create(name, prompt_length, **SETTINGS.get(name, {}))
  model = T5(config, hooks=method.hooks())
  frozen = frozen_params(config)
  prompt = prompts.from_sampled_vocab(jax.random.PRNGKey(1), frozen["token_embedder"]["embedding"],
                                      prompt_length)
  return method, model, frozen, method.init(jax.random.PRNGKey(2), model, frozen, prompt)


def batch_of(rng, batch=3, inputs=7, targets=5, vocab=72):
  enc = rng.integers(2, vocab, (batch, inputs)).astype(np.int32)
  tgt = rng.integers(2, vocab, (batch, targets)).astype(np.int32)
  enc[0, -2:] = 0
  tgt[1, -1:] = 0
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], 1)
  return {"encoder_input_tokens": jnp.asarray(enc), "decoder_input_tokens": jnp.asarray(dec),
          "decoder_target_tokens": jnp.asarray(tgt)}


def test_registry_names_and_errors():
  assert set(NAMES) == {"prompt", "prompt_encoder", "prefix", "lora", "bias", "ia3"}
  assert set(methods.METHODS) == set(NAMES) | {"model"}
  with pytest.raises(methods.MethodError, match=r"Unknown method 'lroa'.*lora"):
    methods.create("lroa")
  with pytest.raises(methods.MethodError, match="Bad settings for method 'lora'"):
    methods.create("lora", rank_typo=4)
  lora = methods.create("lora")
  assert (lora.rank, lora.alpha, lora.targets) == (8, 8.0, r"attention/(query|value)$")
  assert methods.create("prefix").length == 20
  assert methods.create("prompt_encoder", 7).settings() == {"length": 7, "hidden": 200}


@pytest.mark.parametrize("name", NAMES)
def test_frozen_names_unchanged_and_step0(name):
  """The hooks only add leaves; step 0 is the frozen model where the init makes it so."""
  config = get_config("tiny", **ODD)
  method, model, frozen, trainables = make(name, config)
  full = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32),
                        jnp.ones((1, 4), jnp.int32))["params"]
  full_flat = methods.flatten(full)
  for path, leaf in methods.flatten(frozen).items():
    assert full_flat[path].shape == leaf.shape, path
  assert set(full_flat) == set(methods.flatten(frozen)) | set(methods.flatten(trainables))
  batch = batch_of(np.random.default_rng(0))
  base = T5(config).apply({"params": frozen}, *batch.values())
  hooked = model.apply({"params": methods.combine(frozen, trainables)}, *batch.values())
  if name in STEP0_IS_FROZEN:
    np.testing.assert_array_equal(hooked, base)
  else:
    assert not np.allclose(hooked, base)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_step_differentiates_only_the_trainables(name):
  """No products with the shapes of frozen-weight gradients; frozen params bit-identical."""
  config = get_config("tiny", **ODD)
  method, model, frozen, trainables = make(name, config)
  frozen = jax.device_get(frozen)
  before = {k: np.array(v) for k, v in methods.flatten(frozen).items()}
  optimizer = adamw_warmup(1e-2, 10)
  state = init_train_state(trainables, optimizer, 0)
  batch = batch_of(np.random.default_rng(1))
  step = jax.jit(make_train_step(model, optimizer), donate_argnums=(0,))
  kernel_shapes = {tuple(x.shape) for x in before.values() if x.ndim == 2}
  dot_shapes = dot_output_shapes(step.lower(state, frozen, batch).compile().as_text())
  assert dot_shapes, "no dot found: the regex no longer matches XLA's HLO text"
  assert not dot_shapes & kernel_shapes, f"weight-gradient products {dot_shapes & kernel_shapes}"
  start = methods.flatten(jax.device_get(state.params))
  for _ in range(3):  # step 1 has lr 0 (warmup); LoRA's A moves once B is non-zero.
    state, metrics = step(state, frozen, batch)
  assert np.isfinite(float(metrics["loss"]))
  after = methods.flatten(jax.device_get(state.params))
  assert all(not np.array_equal(after[p], start[p]) for p in start), "a trainable did not move"
  for path, value in methods.flatten(frozen).items():
    np.testing.assert_array_equal(np.asarray(value), before[path], err_msg=path)


def test_embedding_shapes():
  """prompt-like: [L, embed]; others: per-stack layer means of the per-layer concatenation."""
  config = get_config("tiny", **ODD)
  e, inner, f, r, p = 24, 20, 36, 3, 3
  expected = {
      "prompt": (4, e), "prompt_encoder": (4, e),
      # prefix (decoder too): key + value [P, heads, head_dim] per self-attention.
      "prefix": (2 * (2 * p * inner),),
      # lora on query, value: encoder 2 modules, decoder 4, each A [in, r] + B [r, out].
      "lora": ((2 + 4) * (e * r + r * inner),),
      # bias on every dense in a layer but keys: encoder q,v,o + wi_0, wi_1, wo; decoder two
      # attentions.
      "bias": ((2 * inner + e + 2 * f + e) + (2 * (2 * inner + e) + 2 * f + e),),
      # ia3: k, v outputs per attention and the wo input.
      "ia3": ((2 * inner + f) + (4 * inner + f),),
  }
  for name in NAMES:
    method, _, _, trainables = make(name, config)
    assert method.embedding(trainables).shape == expected[name], name
  lora, _, _, trainables = make("lora", config)
  concat = lora.embedding(trainables, "concat")
  assert concat.shape == ((2 * 2 + 2 * 4) * (e * r + r * inner),)


def test_layer_embedding_is_the_mean_over_layers_of_the_concatenation():
  tree = methods.unflatten({
      "encoder.layers_0.attention.query.bias": np.array([1.0, 2.0]),
      "encoder.layers_0.mlp.wo.bias": np.array([3.0]),
      "encoder.layers_1.attention.query.bias": np.array([3.0, 4.0]),
      "encoder.layers_1.mlp.wo.bias": np.array([5.0]),
      "decoder.layers_0.mlp.wo.bias": np.array([7.0])})
  np.testing.assert_array_equal(methods.layer_embedding(tree), [7.0, 2.0, 3.0, 4.0])
  np.testing.assert_array_equal(methods.layer_embedding(tree, "concat"),
                                [7.0, 1.0, 2.0, 3.0, 3.0, 4.0, 5.0])
  with pytest.raises(methods.MethodError, match="Unknown embedding kind"):
    methods.layer_embedding(tree, "mean")


def test_prefix_keeps_padding_and_causality():
  """Padding the input or changing later decoder tokens does not move what precedes it."""
  config = get_config("tiny", **ODD)
  _, model, frozen, trainables = make("prefix", config)
  params = {"params": methods.combine(frozen, trainables)}
  batch = batch_of(np.random.default_rng(2), batch=2)
  enc = batch["encoder_input_tokens"]
  padded = jnp.concatenate([enc, jnp.zeros((2, 3), jnp.int32)], axis=1)
  dec, tgt = batch["decoder_input_tokens"], batch["decoder_target_tokens"]
  a = model.apply(params, enc, dec, tgt)
  b = model.apply(params, padded, dec, tgt)
  valid = np.asarray(tgt) > 0  # padded decoder queries are fully masked (T5X): not compared.
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], rtol=1e-4, atol=1e-4)
  changed = dec.at[0, 3:].set(5)
  c = model.apply(params, enc, changed, None)
  d = model.apply(params, enc, dec, None)
  np.testing.assert_allclose(c[:, :3], d[:, :3], rtol=1e-4, atol=1e-4)
  assert not np.allclose(c[:, 3:], d[:, 3:])


PLACEMENTS = [(True, False), (True, True), (False, True)]  # (encoder, decoder); last: PEFT's.


@pytest.mark.parametrize("encoder, decoder", PLACEMENTS)
def test_prefix_placement_decides_the_trainables_and_the_embedding(encoder, decoder):
  config = get_config("tiny", **ODD)
  method = methods.create("prefix", length=3, encoder=encoder, decoder=decoder)
  assert method.settings() == {"length": 3, "decoder": decoder, "encoder": encoder}
  frozen = jax.eval_shape(T5(config).init, jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32),
                          jnp.ones((1, 4), jnp.int32))["params"]
  trainables = method.init(jax.random.PRNGKey(2), T5(config, hooks=method.hooks()), frozen)
  stacks = [s for s, on in (("encoder.layers_{}.attention", encoder),
                            ("decoder.layers_{}.self_attention", decoder)) if on]
  expected = {f"{s.format(i)}.{leaf}" for s in stacks for i in range(2)
              for leaf in ("prefix_key", "prefix_value")}
  assert {p: v.shape for p, v in methods.flatten(trainables).items()} == {
      p: (3, 2, 10) for p in expected}
  assert method.embedding(trainables).shape == (len(stacks) * 2 * 3 * 20,)
  assert method.embedding(trainables, "concat").shape == (len(stacks) * 2 * 2 * 3 * 20,)


def test_prefix_needs_a_stack():
  with pytest.raises(methods.MethodError, match="encoder=False and decoder=False has no "
                                                "prefixes; set Prefix.encoder and/or"):
    methods.create("prefix", encoder=False).hooks()


def test_prefix_cached_decoding_equals_the_full_decoder():
  """The decode cache holds the real positions; the prefix is prepended after it (decoder-only
  prefixes, PEFT's placement; the encoder's prefixes never meet the cache)."""
  import functools

  from spot_jax.evaluation import scoring
  config = get_config("tiny", **ODD)
  method = methods.create("prefix", length=3, encoder=False, decoder=True)
  model = T5(config, hooks=method.hooks())
  frozen = frozen_params(config)
  params = methods.combine(frozen, method.init(jax.random.PRNGKey(2), model, frozen))
  batch = batch_of(np.random.default_rng(5))
  enc, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"].at[1, -1].set(7)
  encoded, mask = model.apply({"params": params}, enc, method=T5.encode)
  full = model.apply({"params": params}, encoded, mask, scoring.shift_right(targets),
                     method=T5.decode)
  cache = scoring.init_decode_cache(model, params, encoded, mask, 5)
  step = jax.jit(functools.partial(model.apply, method=T5.decode_step, mutable=["cache"]),
                 static_argnums=4)
  inputs = scoring.shift_right(targets)
  for i in range(5):
    logits, variables = step({"params": params, "cache": cache}, encoded, mask,
                             inputs[:, i:i + 1], 5)
    cache = variables["cache"]
    np.testing.assert_allclose(logits[:, 0], full[:, i], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(scoring.greedy_decode(model, params, enc, 5),
                                scoring.greedy_decode_uncached(model, params, enc, 5))


@pytest.mark.slow
def test_a_decoder_only_prefix_run_saves_and_records_its_placement(tmp_path):
  import gin
  gin.bind_parameter("spot_jax.methods.Prefix.encoder", False)
  gin.bind_parameter("spot_jax.methods.Prefix.decoder", True)
  try:
    summary = train(small_run(tmp_path, "prefix", train_steps=2, checkpoint_period=2,
                              key_step=2))
  finally:
    gin.clear_config()
  assert summary.method_settings == {"length": 20, "decoder": True, "encoder": False}
  written = os.listdir(run_dir.checkpoint_dir(str(tmp_path), 2))
  assert sorted(written) == sorted(f"decoder.layers_{i}.self_attention.{leaf}"
                                   for i in range(2) for leaf in ("prefix_key", "prefix_value"))
  assert np.load(os.path.join(run_dir.checkpoint_dir(str(tmp_path), 2), written[0])).shape == (
      20, 4, 16)


# ----------------------------------------------------------------------------- runs


def small_run(model_dir, method, **overrides) -> TrainConfig:
  fields = dict(model_dir=str(model_dir), task="synthetic_sentiment_a", model="tiny_byte",
                feature_lengths={"inputs": 32, "targets": 8}, train_steps=6, batch_size=4,
                prompt_length=4, checkpoint_period=3, eval_period=0, log_period=3, key_step=3,
                method=method)
  fields.update(overrides)
  return TrainConfig(**fields)


class Interrupted(RuntimeError):
  pass


def interrupt_after_first_checkpoint(monkeypatch) -> None:
  """The next `train` raises Interrupted right after writing its first checkpoint (undo it with
  `monkeypatch.undo()`)."""
  from spot_jax.train import loop
  real = loop._checkpoint

  def stop_after_first(cfg, method, state, step, *args):
    real(cfg, method, state, step, *args)
    raise Interrupted(step)

  monkeypatch.setattr(loop, "_checkpoint", stop_after_first)


# LoRA in the default suite; the other methods (same code path, other leaves) are slow tests.
@pytest.mark.slow  # minutes per method on 2 CPU cores; prompt resume: tests/test_train.py
@pytest.mark.parametrize("name", [n for n in NAMES if n != "prompt"])
def test_run_saves_every_leaf_and_an_interrupted_run_resumes_bit_equal(name, tmp_path,
                                                                       monkeypatch):
  straight = train(small_run(tmp_path / "straight", name))
  assert straight.method == name and straight.finished
  written = set(os.listdir(run_dir.checkpoint_dir(str(tmp_path / "straight"), 6)))
  method = methods.create(name, 4)
  assert straight.method_settings == method.settings()
  assert straight.optimizer["name"] == "adamw" and straight.optimizer["warmup_fraction"] == 0.06
  interrupt_after_first_checkpoint(monkeypatch)
  with pytest.raises(Interrupted):
    train(small_run(tmp_path / "killed", name))
  monkeypatch.undo()
  resumed = train(small_run(tmp_path / "killed", name))
  assert resumed.steps_done == 6
  for step in (0, 3, 6):
    files = set(os.listdir(run_dir.checkpoint_dir(str(tmp_path / "killed"), step)))
    assert files == written
    for file in files:
      np.testing.assert_array_equal(
          np.load(os.path.join(run_dir.checkpoint_dir(str(tmp_path / "killed"), step), file)),
          np.load(os.path.join(run_dir.checkpoint_dir(str(tmp_path / "straight"), step), file)))
  if name == "prompt_encoder":
    assert run_dir.PROMPT_FILENAME in written  # the encoder's output, saved as a prompt.
  # Transfer for every method: a run starts from another run's trainables.
  source = run_dir.checkpoint_dir(str(tmp_path / "straight"), 6)
  target = train(small_run(tmp_path / "target", name, train_steps=3,
                           task="synthetic_topic_4way", init_from=source))
  assert target.finished
  for file in written:
    np.testing.assert_array_equal(
        np.load(os.path.join(run_dir.checkpoint_dir(str(tmp_path / "target"), 0), file)),
        np.load(os.path.join(source, file)))


# The tiny model learns in 150 steps with larger rates than the documented (T5-size) defaults.
TINY_STEPS = {"bias": 300}  # new biases on a 2-layer model learn slowest.
TINY_LEARNING_RATES = {"prompt_encoder": 1e-2, "prefix": 3e-2, "lora": 1e-2, "bias": 2e-2,
                       "ia3": 1e-1}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n != "prompt"])
def test_method_learns_a_held_out_synthetic_task(name, pretrained_checkpoint, tmp_path):
  """sentiment_b is held out of pretraining; only the trained parameters can solve it."""
  summary = train(TrainConfig(
      model_dir=str(tmp_path), task="synthetic_sentiment_b", model="tiny_byte",
      initial_checkpoint=str(pretrained_checkpoint),
      feature_lengths={"inputs": 48, "targets": 12}, train_steps=TINY_STEPS.get(name, 150),
      prompt_length=20,
      checkpoint_period=75, eval_period=75, eval_metric="accuracy", log_period=75,
      method=name, key_step=75, learning_rate=TINY_LEARNING_RATES[name],
      eval_mode="rank_classification"))
  from spot_jax.evaluation.evaluator import PromptEvaluator
  from spot_jax.train.loop import build_frozen_model
  cfg = small_run(tmp_path, name, prompt_length=20, task="synthetic_sentiment_b",
                  initial_checkpoint=str(pretrained_checkpoint))
  method = methods.create(name, 20)
  model, frozen, _, _ = build_frozen_model(cfg, method)
  files = sorted(os.listdir(run_dir.checkpoint_dir(str(tmp_path), 0)))
  step0 = methods.unflatten(run_dir.load_trainables(run_dir.checkpoint_dir(str(tmp_path), 0),
                                                    [f for f in files
                                                     if f != run_dir.PROMPT_FILENAME
                                                     or name == "prompt"]))
  # Rank classification: the untrained model's greedy outputs are rarely a label at all.
  evaluator = PromptEvaluator(model, frozen, "synthetic_sentiment_b", 32,
                              mode="rank_classification")
  untrained = evaluator.evaluate(step0)["synthetic_sentiment_b"]["accuracy"]
  print(f"{name}: untrained {untrained:.1f}%, trained {summary.best_score:.1f}%")
  assert summary.best_score >= untrained + 10, (untrained, summary.checkpoints)


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_fold_equals_the_hooked_model(name):
  config = get_config("tiny", **ODD)
  method, model, frozen, trainables = make(name, config)
  rng = np.random.default_rng(3)
  trainables = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape).astype(np.float32),
                            jax.device_get(trainables))
  folded = method.fold(jax.device_get(frozen), trainables)
  assert jax.tree.map(np.shape, folded) == jax.tree.map(np.shape, jax.device_get(frozen))
  batch = batch_of(rng)
  hooked = model.apply({"params": methods.combine(frozen, trainables)}, *batch.values())
  np.testing.assert_allclose(T5(config).apply({"params": folded}, *batch.values()), hooked,
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(methods.MethodError, match="cannot be folded"):
    methods.create("bias").fold(frozen, {})


@pytest.mark.slow  # minutes on 2 CPU cores: the default suite stays under 15 min
def test_export_merged_writes_a_loadable_t5x_checkpoint(tmp_path):
  from spot_jax.checkpoints.load import load_model
  from spot_jax.train.export import export_merged
  summary = train(small_run(tmp_path / "run", "lora", train_steps=3, learning_rate=0.05))
  out = export_merged(str(tmp_path / "run"), str(tmp_path / "merged"))
  loaded = load_model(out, config=get_config("tiny_byte"))
  cfg = small_run(tmp_path / "run", "lora")
  method = methods.create("lora")
  model, frozen, _, _ = build_frozen_model_for(cfg, method)
  names = sorted(os.listdir(run_dir.checkpoint_dir(str(tmp_path / "run"), summary.best_step)))
  trainables = methods.unflatten(run_dir.load_trainables(
      run_dir.checkpoint_dir(str(tmp_path / "run"), summary.best_step), names))
  batch = batch_of(np.random.default_rng(4), vocab=300)
  np.testing.assert_allclose(
      T5(loaded.config).apply({"params": loaded.params}, *batch.values()),
      model.apply({"params": methods.combine(frozen, trainables)}, *batch.values()),
      rtol=1e-4, atol=1e-4)


def build_frozen_model_for(cfg, method):
  from spot_jax.train.loop import build_frozen_model
  return build_frozen_model(dataclasses.replace(cfg, dropout_rate=0.0), method)
