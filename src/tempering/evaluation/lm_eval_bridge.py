"""`temper eval --lm-eval TASKS`: EleutherAI's lm-evaluation-harness on a checkpoint, offline.

lm-eval loads the checkpoint through its Hugging Face path (`AutoModelForCausalLM` and
`AutoTokenizer` on the checkpoint dir, which is a transformers model directory), so the number
is the one anyone gets from the same files. The hub and datasets libraries are switched to
offline mode before lm-eval is imported: a task must be local (`configs/lm_eval/`, or a
directory given with --lm-eval-include) or already in the datasets cache.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tempering.checkpoint.io import load_checkpoint
from tempering.errors import UserError

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_EVALUATE_OFFLINE": "1"}
LOCAL_TASKS = Path(__file__).resolve().parents[3] / "configs" / "lm_eval"  # the repository's shipped tasks
INSTALL_HINT = "pip install 'tempering[eval]'"


def run_lm_eval(checkpoint: str, tasks: list[str], *, limit: float | None = None, num_fewshot: int | None = None,
                batch_size: int = 8, device: str = "cpu", output: Path | None = None,
                include: list[Path] = ()) -> tuple[dict, str, Path]:
    """Evaluate the checkpoint on lm-eval tasks; write the results JSON; return (results, table, JSON path)."""
    source = load_checkpoint(checkpoint)
    architectures = source.hf_config.get("architectures") or []
    if not any(name.endswith("ForCausalLM") for name in architectures):
        raise UserError(f"lm-eval runs decoder (causal LM) checkpoints; {source.path} holds "
                        f"{', '.join(architectures) or source.hf_config.get('model_type')}")
    os.environ.update(OFFLINE_ENV)  # read by huggingface_hub and datasets when they are imported
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
        from lm_eval.utils import make_table
    except ImportError as exc:
        raise UserError(f"temper eval --lm-eval needs lm-evaluation-harness ({exc}): {INSTALL_HINT}") from None
    for name in ("lm_eval", "lm-eval", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    manager = TaskManager(include_path=[str(d) for d in _task_dirs(include)])
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        local = sorted(_local_task_names(include))
        raise UserError(f"unknown lm-eval task {unknown[0]!r}; local tasks: {', '.join(local) or 'none'} "
                        "(add a directory of task YAMLs with --lm-eval-include)")
    results = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(source.path), "dtype": "float32"},
        tasks=tasks, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, device=device,
        task_manager=manager, log_samples=False)
    output = output or source.path.with_name(f"{source.path.name}.lm_eval.{'+'.join(tasks)}.json")
    report = {"checkpoint": str(source.path), "step": source.meta.get("step"), "tasks": tasks, "limit": limit,
              "num_fewshot": num_fewshot, **{k: results[k] for k in ("results", "versions", "n-shot", "n-samples",
                                                                       "higher_is_better") if k in results}}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report, make_table(results), output


def parse_limit(text: str | None) -> float | None:
    """--limit for lm-eval: a number of examples per task (N >= 1) or a fraction (0 < F < 1)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value >= 1 and value == int(value):
        return int(value)
    if 0 < value < 1:
        return value
    raise UserError(f"--limit {text!r}: with --lm-eval give a number of examples per task (N >= 1) or a fraction "
                    "(0 < F < 1)")


def _task_dirs(include: list[Path]) -> list[Path]:
    dirs = [Path(d) for d in include]
    for directory in dirs:
        if not directory.is_dir():
            raise UserError(f"--lm-eval-include {directory}: not a directory of lm-eval task YAMLs")
    return ([LOCAL_TASKS] if LOCAL_TASKS.is_dir() else []) + dirs


def _local_task_names(include: list[Path]) -> set[str]:
    """The `task:` names of the YAMLs in the local task directories."""
    return {line.split(":", 1)[1].strip() for directory in _task_dirs(include) for path in directory.glob("*.yaml")
            for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("task:")}
