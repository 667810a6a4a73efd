"""Source-checkpoint resolution order, placeholders, the previous-run cache, and source validation."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from tempering.checkpoint import resolution
from tempering.checkpoint.resolution import (
    cache_file_path,
    fill_config_placeholders,
    fill_placeholders,
    record_run,
    resolve_source_checkpoint,
    run_id_of,
    source_names,
    validate_source_checkpoint,
)
from tempering.config.schema import Config
from tempering.errors import UserError
from tempering.models.family import SpecialTokenIds
from tempering.models.llama.architecture import Architecture
from tempering.models.llama.hf_config import to_hf_config
from tempering.models.llama.model import build_model
from tempering.tokenizer import EOS, PAD, tokenizer_fingerprint

ARCH = Architecture(vocab_size=16, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=16, max_seq_len=16)
TIED_ARCH = Architecture(**{**ARCH.to_dict(), "tie_embeddings": True, "n_layers": 2})


@functools.cache
def weights_of(arch: Architecture) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(arch).export_state_dict()


@pytest.fixture
def make_checkpoint():
    """Write a minimal checkpoint dir; returns its path. `words` changes the tokenizer's fingerprint."""

    def make(folder: Path, *, step: int = 1, words=("a", "b"), record_fingerprint: bool = True,
             arch: Architecture = ARCH, weights_arch: Architecture | None = None) -> Path:
        folder.mkdir(parents=True)
        save_file(weights_of(weights_arch or arch), str(folder / "model.safetensors"))
        hf_config = to_hf_config(arch, special=SpecialTokenIds(bos_id=None, eos_ids=(0,), pad_id=1))
        (folder / "config.json").write_text(json.dumps(hf_config))
        vocab = {EOS: 0, PAD: 1, **{word: index + 2 for index, word in enumerate(words)}}
        tokenizer = Tokenizer(WordLevel(vocab, unk_token=PAD))
        tokenizer.save(str(folder / "tokenizer.json"))
        meta = {"step": step}
        if record_fingerprint:
            meta["tokenizer_fingerprint"] = tokenizer_fingerprint(tokenizer)
        (folder / "meta.json").write_text(json.dumps(meta))
        return folder

    return make


@pytest.fixture
def make_run(make_checkpoint):
    """Write a run dir with best/ (step 5), final/ (step 9) and checkpoints/step-00000007."""

    def make(folder: Path) -> Path:
        make_checkpoint(folder / "best", step=5)
        make_checkpoint(folder / "final", step=9)
        make_checkpoint(folder / "checkpoints" / "step-00000007", step=7)
        return folder

    return make


def config(**sections) -> Config:
    return Config.model_validate(sections)


def fingerprint_of(checkpoint: Path) -> str:
    return tokenizer_fingerprint(Tokenizer.from_file(str(checkpoint / "tokenizer.json")))


# --- resolution order -------------------------------------------------------------------------

@pytest.fixture
def four_sources(tmp_path, make_run):
    """One run dir per source, all set: (config, environ, cli path, run dirs by source)."""
    runs = {source: make_run(tmp_path / source) for source in ("cli", "env", "config", "cache")}
    environ = {"HOME": str(tmp_path / "home"), "CHECKPOINT_PATH": str(runs["env"])}
    cfg = config(checkpoint={"source_path": str(runs["config"]), "cache_file": str(tmp_path / "last.json")})
    record_run(cfg, runs["cache"], {"final_step": 9, "stop_reason": "max_steps"}, environ)
    return cfg, environ, str(runs["cli"]), runs


def test_cli_checkpoint_wins_over_everything(four_sources):
    cfg, environ, cli, runs = four_sources
    path, origin = resolve_source_checkpoint(cfg, cli, environ=environ)
    assert path == runs["cli"] / "best"
    assert origin == f"--checkpoint {cli} → {runs['cli'] / 'best'}"


def test_environment_wins_without_cli(four_sources):
    cfg, environ, _, runs = four_sources
    path, origin = resolve_source_checkpoint(cfg, None, environ=environ)
    assert path == runs["env"] / "best"
    assert origin == f"CHECKPOINT_PATH={runs['env']} → {runs['env'] / 'best'}"


def test_config_source_path_wins_without_cli_and_environment(four_sources):
    cfg, environ, _, runs = four_sources
    del environ["CHECKPOINT_PATH"]
    path, origin = resolve_source_checkpoint(cfg, None, environ=environ)
    assert path == runs["config"] / "best"
    assert origin.startswith(f"checkpoint.source_path {runs['config']}")


def test_previous_run_cache_is_the_last_resort(four_sources):
    cfg, environ, _, runs = four_sources
    del environ["CHECKPOINT_PATH"]
    cfg.checkpoint.source_path = None
    path, origin = resolve_source_checkpoint(cfg, None, environ=environ)
    assert path == runs["cache"] / "best"
    assert origin == (f"previous run 'run' at {runs['cache']} (recorded in {cfg.checkpoint.cache_file}) "
                      f"→ {runs['cache'] / 'best'}")


def test_a_checkpoint_dir_is_used_as_is_and_select_picks_in_a_run_dir(tmp_path, make_run):
    run = make_run(tmp_path / "run")
    environ = {"HOME": str(tmp_path)}
    assert resolve_source_checkpoint(config(), str(run / "best"), environ=environ) == (
        run / "best", f"--checkpoint {run / 'best'}")
    for select, wanted in (("final", "final"), ("latest", "final"), ("best", "best")):
        cfg = config(checkpoint={"select": select})
        assert resolve_source_checkpoint(cfg, str(run), environ=environ)[0] == run / wanted
    (run / "final" / "meta.json").write_text(json.dumps({"step": 6}))
    latest = resolve_source_checkpoint(config(checkpoint={"select": "latest"}), str(run), environ=environ)[0]
    assert latest == run / "checkpoints" / "step-00000007"


@pytest.mark.parametrize("source", ["cli", "env", "config", "cache"])
@pytest.mark.parametrize("problem, message", [
    ("missing", "does not exist"),
    ("empty run dir", "no checkpoint found in .* it is empty"),
    ("file", "is a file"),
])
def test_a_set_but_bad_source_is_an_error_naming_it(four_sources, tmp_path, source, problem, message):
    cfg, environ, cli, _ = four_sources
    bad = tmp_path / "bad"
    if problem == "empty run dir":
        bad.mkdir()
    elif problem == "file":
        bad.write_text("not a checkpoint")
    # Every source below the bad one stays set and good: resolution must not fall through.
    if source == "cli":
        cli = str(bad)
    else:
        cli = None
        if source == "env":
            environ["CHECKPOINT_PATH"] = str(bad)
        else:
            del environ["CHECKPOINT_PATH"]
            if source == "config":
                cfg.checkpoint.source_path = str(bad)
            else:
                cfg.checkpoint.source_path = None
                record_run(cfg, bad, {"final_step": 1, "stop_reason": "max_steps"}, environ)
    origin = {"cli": f"--checkpoint {bad}", "env": f"CHECKPOINT_PATH={bad}",
              "config": f"checkpoint.source_path {bad}", "cache": "previous run 'run'"}[source]
    with pytest.raises(UserError, match=f"source checkpoint from {origin}.*{message}"):
        resolve_source_checkpoint(cfg, cli, environ=environ)


def test_a_damaged_cache_file_is_an_error_naming_it(tmp_path):
    cache = tmp_path / "last.json"
    cache.write_text("{not json")
    with pytest.raises(UserError, match=f"previous-run cache {cache} is unreadable"):
        resolve_source_checkpoint(config(checkpoint={"cache_file": str(cache)}), None,
                                  environ={"HOME": str(tmp_path)})


def test_nothing_set_lists_the_four_ways(tmp_path):
    with pytest.raises(UserError) as error:
        resolve_source_checkpoint(config(), None, environ={"HOME": str(tmp_path)})
    message = str(error.value)
    for way in ("--checkpoint PATH", "CHECKPOINT_PATH", "checkpoint.source_path",
                str(tmp_path / ".cache" / "tempering" / "last_run.json")):
        assert way in message


def test_an_empty_cli_or_environment_value_counts_as_unset(tmp_path, make_run):
    run = make_run(tmp_path / "run")
    environ = {"HOME": str(tmp_path), "CHECKPOINT_PATH": ""}
    cfg = config(checkpoint={"source_path": str(run)})
    assert resolve_source_checkpoint(cfg, "", environ=environ)[0] == run / "best"


# --- placeholders -----------------------------------------------------------------------------

def test_placeholders_fill_from_the_config(tmp_path, make_run):
    cfg = config(stage="post_train", run={"name": "base", "seed": 7}, model={"preset": "tiny"},
                 training={"max_steps": 30}, data={"datasets": [{"path": "corpus/code"}]})
    template = "runs/{run_name}-{seed:03d}/{stage}/{preset}/{training.max_steps}/{data.datasets.0.path}"
    assert fill_placeholders(template, cfg) == "runs/base-007/post_train/tiny/30/corpus/code"
    make_run(tmp_path / "base-7")
    cfg.checkpoint.source_path = str(tmp_path / "{run_name}-{run.seed}")
    path, origin = resolve_source_checkpoint(cfg, None, environ={"HOME": str(tmp_path)})
    assert path == tmp_path / "base-7" / "best"
    assert f"= {tmp_path / 'base-7'} → " in origin


@pytest.mark.parametrize("template, message", [
    ("runs/{run_id}", r"placeholder \{run_id\} is not set in the config \(set checkpoint.run_id\)"),
    ("runs/{experiment}", r"unknown placeholder \{experiment\}"),
    ("runs/{training.lr}", r"unknown placeholder \{training.lr\}"),
    ("runs/{data.datasets.3.path}", r"unknown placeholder \{data.datasets.3.path\}"),
    ("runs/{run.save_dir}", r"placeholder \{run.save_dir\} is not set"),
    ("runs/{training}", r"placeholder \{training\} is a config section"),
    ("runs/{run_name", "expected '}'"),
])
def test_bad_placeholders_are_errors_naming_them(template, message):
    with pytest.raises(UserError, match=message):
        fill_placeholders(template, config())


def test_backbone_and_run_id_come_from_the_config_else_the_previous_run(tmp_path, make_run):
    environ = {"HOME": str(tmp_path)}
    cache = tmp_path / "last.json"
    previous = make_run(tmp_path / "runs" / "distilbert" / "ner-1")
    (previous / "final" / "meta.json").write_text(json.dumps({"step": 9, "preset": "distilbert"}))
    named = config(run={"name": "ner"}, checkpoint={"cache_file": str(cache)})
    record_run(named, previous, {"final_step": 9, "stop_reason": "max_steps"}, environ)
    recorded = json.loads(cache.read_text())
    assert recorded["backbone"] == "distilbert" and recorded["run_id"] == run_id_of(named, previous)
    template = str(tmp_path / "runs" / "{backbone}" / "{run_id}")
    (tmp_path / "runs" / "distilbert" / recorded["run_id"]).symlink_to(previous)
    cfg = config(checkpoint={"source_path": template, "cache_file": str(cache)})
    path, origin = resolve_source_checkpoint(cfg, None, environ=environ)
    assert path == tmp_path / "runs" / "distilbert" / recorded["run_id"] / "best"
    # Explicit keys win over the cache; the environment wins over the config.
    make_run(tmp_path / "runs" / "bert" / "r7")
    cfg = config(checkpoint={"source_path": template, "cache_file": str(cache), "backbone": "bert", "run_id": "r7"})
    assert resolve_source_checkpoint(cfg, None, environ=environ)[0] == tmp_path / "runs" / "bert" / "r7" / "best"
    environment = make_run(tmp_path / "from-env")
    assert resolve_source_checkpoint(cfg, None, environ={**environ, "CHECKPOINT_PATH": str(environment)})[0] == \
        environment / "best"


def test_placeholders_fill_any_config_key_and_keep_what_was_set():
    cfg = config(stage="post_train", run={"name": "ner", "save_dir": "runs/{run_name}-continued-{backbone}"},
                 data={"datasets": [{"path": "data/{stage}/train.jsonl"}]})
    filled = fill_config_placeholders(cfg, {"backbone": "distilbert", "run_id": "base-1"})
    assert str(filled.run.save_dir) == "runs/ner-continued-distilbert"
    assert filled.data.datasets[0].path == "data/post_train/train.jsonl"
    assert filled.model.model_fields_set == cfg.model.model_fields_set  # explicit keys stay explicit
    assert fill_config_placeholders(config()) == config()
    with pytest.raises(UserError, match=r"run.save_dir 'runs/\{nope\}': unknown placeholder \{nope\}"):
        fill_config_placeholders(config(run={"save_dir": "runs/{nope}"}))


def test_a_source_names_its_backbone_and_run_id():
    assert source_names({"backbone": "distilbert", "preset": "encoder_tiny", "run_id": "x-1"}) == \
        {"backbone": "distilbert", "run_id": "x-1"}
    assert source_names({"preset": None, "model_type": "llama"}) == {"backbone": "llama"}


# --- the previous-run cache -------------------------------------------------------------------

def test_cache_file_location(tmp_path):
    home = {"HOME": str(tmp_path / "home")}
    assert cache_file_path(config(), home) == tmp_path / "home" / ".cache" / "tempering" / "last_run.json"
    environ = {**home, "TEMPERING_CACHE_DIR": str(tmp_path / "cache")}
    assert cache_file_path(config(), environ) == tmp_path / "cache" / "last_run.json"
    configured = config(checkpoint={"cache_file": str(tmp_path / "mine.json")})
    assert cache_file_path(configured, environ) == tmp_path / "mine.json"


def test_record_run_writes_the_cache_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {"HOME": str(tmp_path), "TEMPERING_CACHE_DIR": str(tmp_path / "new" / "cache")}
    cfg = config(stage="post_train", run={"name": "code"})
    record_run(cfg, Path("runs/older"), {"final_step": 3, "stop_reason": "max_steps"}, environ)
    record_run(cfg, Path("runs/code"), {"final_step": 40, "stop_reason": "early_stopping"}, environ)
    cache = tmp_path / "new" / "cache" / "last_run.json"
    record = json.loads(cache.read_text())
    assert set(record) == {"save_dir", "run_name", "run_id", "backbone", "stage", "final_step", "stop_reason",
                           "finished_at"}
    assert record["save_dir"] == str(tmp_path / "runs" / "code")
    assert (record["run_name"], record["stage"], record["final_step"], record["stop_reason"]) == (
        "code", "post_train", 40, "early_stopping")
    assert [entry.name for entry in cache.parent.iterdir()] == ["last_run.json"]  # no temporary left


def test_record_run_only_warns_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    output = io.StringIO()
    monkeypatch.setattr(resolution, "console", Console(file=output, width=1000))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache dir should be")
    cfg = config(checkpoint={"cache_file": str(blocker / "last_run.json")})
    record_run(cfg, tmp_path / "run", {"final_step": 1, "stop_reason": "max_steps"}, {"HOME": str(tmp_path)})
    assert output.getvalue() == (f"warning: could not record this run in {blocker / 'last_run.json'} (File exists); "
                                 f"later stages will need --checkpoint {tmp_path / 'run'}\n")
    assert blocker.read_text() == "a file where the cache dir should be"


# --- validation -------------------------------------------------------------------------------

def test_a_good_checkpoint_validates_and_returns_its_meta(tmp_path, make_checkpoint):
    checkpoint = make_checkpoint(tmp_path / "ckpt", step=12)
    fingerprint = fingerprint_of(checkpoint)
    meta = validate_source_checkpoint(checkpoint, data_fingerprints=[("shards/code", fingerprint),
                                                                     ("raw.txt", None)])
    assert meta == {"step": 12, "tokenizer_fingerprint": fingerprint}


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "meta.json", "tokenizer.json"])
def test_a_missing_file_is_named(tmp_path, make_checkpoint, name):
    checkpoint = make_checkpoint(tmp_path / "ckpt")
    (checkpoint / name).unlink()
    with pytest.raises(UserError, match=f"source checkpoint {checkpoint} is incomplete: {name} is missing"):
        validate_source_checkpoint(checkpoint, data_fingerprints=[])


@pytest.mark.parametrize("content, message", [
    ("{truncated", "config.json is corrupt or truncated"),
    ('{"model_type": "gpt2"}', "config.json: model_type is 'gpt2'"),
    ('{"model_type": "llama", "hidden_size": 8}', "config.json: config has no 'num_attention_heads'"),
])
def test_a_bad_config_json_is_named(tmp_path, make_checkpoint, content, message):
    checkpoint = make_checkpoint(tmp_path / "ckpt")
    (checkpoint / "config.json").write_text(content)
    with pytest.raises(UserError, match=message):
        validate_source_checkpoint(checkpoint, data_fingerprints=[])


@pytest.mark.parametrize("arch", [ARCH, TIED_ARCH], ids=["untied", "tied"])
def test_weights_of_every_shape_the_model_writes_validate(tmp_path, make_checkpoint, arch):
    checkpoint = make_checkpoint(tmp_path / "ckpt", arch=arch)
    assert validate_source_checkpoint(checkpoint, data_fingerprints=[])["step"] == 1
    if arch.tie_embeddings:  # an exporter that also writes the tied head
        weights = {**weights_of(arch), "lm_head.weight": weights_of(arch)["model.embed_tokens.weight"].clone()}
        save_file(weights, str(checkpoint / "model.safetensors"))
        assert validate_source_checkpoint(checkpoint, data_fingerprints=[])["step"] == 1


def test_weights_that_do_not_fit_the_config_are_named(tmp_path, make_checkpoint):
    wider = make_checkpoint(tmp_path / "wider", arch=Architecture(**{**ARCH.to_dict(), "d_ff": 32}),
                            weights_arch=ARCH)
    with pytest.raises(UserError, match=r"model.safetensors: model.layers.0.mlp.gate_proj.weight has shape "
                                         r"\[16, 8\], but its config.json implies \[32, 8\]"):
        validate_source_checkpoint(wider, data_fingerprints=[])
    deeper = make_checkpoint(tmp_path / "deeper", arch=Architecture(**{**ARCH.to_dict(), "n_layers": 2}),
                             weights_arch=ARCH)
    with pytest.raises(UserError, match="model.safetensors lacks tensor model.layers.1.* and 8 more"):
        validate_source_checkpoint(deeper, data_fingerprints=[])
    headless = make_checkpoint(tmp_path / "headless", weights_arch=Architecture(**{**ARCH.to_dict(), "tie_embeddings": True}))
    with pytest.raises(UserError, match="model.safetensors lacks tensor lm_head.weight for the architecture"):
        validate_source_checkpoint(headless, data_fingerprints=[])
    stray = make_checkpoint(tmp_path / "stray", weights_arch=Architecture(**{**ARCH.to_dict(), "n_layers": 2}))
    with pytest.raises(UserError, match="model.safetensors has unexpected tensor model.layers.1.* and 8 more"):
        validate_source_checkpoint(stray, data_fingerprints=[])


@pytest.mark.parametrize("record_fingerprint", [True, False])
def test_a_tokenizer_mismatch_names_the_dataset_and_both_fingerprints(tmp_path, make_checkpoint,
                                                                       record_fingerprint):
    checkpoint = make_checkpoint(tmp_path / "ckpt", record_fingerprint=record_fingerprint)
    other = make_checkpoint(tmp_path / "other", words=("x", "y", "z"))
    ours, theirs = fingerprint_of(checkpoint), fingerprint_of(other)
    assert ours != theirs
    pairs = [("shards/prose", ours), ("shards/code", theirs)]
    with pytest.raises(UserError, match=f"dataset shards/code was tokenized with tokenizer {theirs}, "
                                        f"but source checkpoint {checkpoint} uses tokenizer {ours}"):
        validate_source_checkpoint(checkpoint, data_fingerprints=pairs)
