"""The typed config schema shared by every stage (pretrain, post-train, SFT, DPO, prep).

One YAML file describes one run. Every field has a type, a default where one makes
sense, and one line of help that `temper config schema` prints. Sections a stage
does not use are simply left at their defaults.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tempering.errors import UserError
from tempering.ranks import world_size


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    """Where the run writes and how it is named."""

    name: str = Field("run", description="Run name (a top-level run_name in a config file means the same): names the run directory under paths.output_base and fills {run_name} placeholders. When not given: the save dir's folder name, else made from the stage, the preset or source model and the dataset names (pretrain-tiny-prose).")
    save_dir: Path | None = Field(None, description="Run directory: config.yaml, metrics.jsonl, checkpoints/, best/, final/. Default: paths.output_base/run.name (paths.debug_base/run.name with debug.enabled) when paths.output_base is set.")
    seed: int = Field(1337, ge=0, le=2**63 - 1, description="Seed for initialisation, data order and sampling; a run is a function of (config, data, seed).")


class ModelConfig(Section):
    """Architecture: a preset plus optional per-dimension overrides."""

    preset: str = Field("nano", description="Named architecture (see `temper presets`).")
    vocab_size: int | None = Field(None, description="Override the preset's vocabulary size (default: the tokenizer's).")
    d_model: int | None = Field(None, description="Override the hidden width.")
    n_layers: int | None = Field(None, description="Override the number of decoder blocks.")
    n_heads: int | None = Field(None, description="Override the number of query heads.")
    n_kv_heads: int | None = Field(None, description="Override the number of key/value heads (grouped-query attention).")
    d_ff: int | None = Field(None, description="Override the SwiGLU hidden width.")
    max_seq_len: int | None = Field(None, description="Override the longest context the model supports.")
    rope_theta: float | None = Field(None, description="Override the rotary embedding base.")
    tie_embeddings: bool | None = Field(None, description="Override whether the output head shares the embedding matrix.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability on attention and residual outputs.")
    n_experts: int | None = Field(None, description="Mixture of experts: override the number of experts per layer.")
    experts_per_token: int | None = Field(None, description="Mixture of experts: override how many experts each token is routed to (top-k, default 2).")
    router_aux_loss_coef: float | None = Field(None, description="Mixture of experts: weight of the router load-balancing loss (Switch/Mixtral form; preset default 0.01, 0 disables).")
    router_z_loss_coef: float | None = Field(None, description="Mixture of experts: weight of the router z-loss (ST-MoE; preset default 0.001, 0 disables).")
    shared_expert_d_ff: int | None = Field(None, description="Mixture of experts: hidden width of a shared SwiGLU expert every token goes through, gated as in Qwen2-MoE (checkpoints then load as Qwen2MoeForCausalLM); preset default 0, none.")
    image_size: int | None = Field(None, gt=0, description="Vision: override the encoder's input size (square, pixels per side).")
    patch_size: int | None = Field(None, gt=0, description="Vision: override the encoder's patch size (pixels per side).")
    patch_embed: Literal["linear", "conv"] | None = Field(None, description="Vision: how pixels become patch embeddings. linear (the preset's): one strided convolution, SigLIP's, so checkpoints load in transformers as LLaVA. conv: a stem of 3x3 convolutions (stride 1, then stride 2 down to the patch grid) that learns shapes in far fewer steps; transformers cannot load such a checkpoint (Tempering loads, resumes, evaluates and generates with it).")


class TokenizerConfig(Section):
    """Which tokenizer the run uses."""

    path: Path | None = Field(None, description="Tokenizer directory (tokenizer.json); defaults to the one beside the data or checkpoint.")


class DatasetConfig(Section):
    """One input dataset: a file, directory or glob."""

    path: str = Field(min_length=1, description="File, directory (read recursively) or glob.")
    name: str | None = Field(None, description="Name shown in logs and metrics (default: the path's stem).")
    weight: float = Field(1.0, gt=0, description="Relative sampling weight when several datasets are mixed.")
    format: Literal["auto", "shards", "text", "jsonl", "parquet", "csv", "messages", "alpaca", "tool_call", "reasoning", "preference"] = Field(
        "auto", description="Record format; auto detects by extension and by the fields of each record.")
    text_field: str = Field("text", description="Field (JSONL) or column (Parquet/CSV) holding the text.")
    transform: str | None = Field(None, description="Name of a registered transform applied to each record.")
    limit: int | None = Field(None, gt=0, description="Use at most this many documents/examples.")


class DataConfig(Section):
    """Training and validation data."""

    datasets: list[DatasetConfig] = Field(default_factory=list, description="Training datasets (shards from `temper prep`, or raw text).")
    val_data: list[DatasetConfig] = Field(default_factory=list, description="Separate validation datasets; when empty, val_split is used.")
    val_split: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of training documents held out for validation when val_data is empty (0 disables).")
    seq_len: int = Field(256, gt=0, description="Tokens per training sequence (packed, no padding).")
    strategy: Literal["new_only", "combined", "append"] = Field("new_only", description="Post-training: train on new data only, old+new shuffled, or old then new.")
    old_datasets: list[DatasetConfig] = Field(default_factory=list, description="Post-training: the original data, for combined/append and the forgetting watch.")
    create_new_validation: bool = Field(True, description="Post-training: hold out validation_ratio of the new data (drawn with random_seed) as val:new when val_data is empty; false trains on all of it and watches val:original (and val_data) only.")
    validation_ratio: float | None = Field(None, gt=0.0, lt=1.0, description="Post-training: fraction of the new data held out as val:new (default val_split).")
    random_seed: int | None = Field(None, description="Post-training: seed of the val:new split (default run.seed), so the held-out examples can stay fixed while run.seed changes.")

    def new_validation_split(self, run_seed: int) -> tuple[float, int]:
        """Post-training's (fraction of the new data held out as val:new, seed of that split); fraction 0: none."""
        if not self.create_new_validation:
            return 0.0, run_seed
        ratio = self.validation_ratio if self.validation_ratio is not None else self.val_split
        return ratio, self.random_seed if self.random_seed is not None else run_seed


class FsdpConfig(Section):
    """FSDP2 (training.strategy=fsdp): how parameters are sharded between steps."""

    reshard_after_forward: bool = Field(True, description="Free the gathered parameters after each block's forward and gather them again for backward: ZeRO-3-like, least memory (DeepSpeed zero3). false keeps them until backward: ZeRO-2-like, less communication (DeepSpeed zero2).")


class TrainingConfig(Section):
    """The optimisation loop: length, batch, optimiser, schedule, eval, save, device."""

    max_steps: int | None = Field(None, gt=0, description="Train for this many optimizer steps (one of max_steps/epochs/num_training_samples/num_training_tokens).")
    epochs: float | None = Field(None, gt=0, description="Train for this many passes over the training data.")
    num_training_samples: int | None = Field(None, gt=0, description="Train on this many sequences/examples.")
    num_training_tokens: int | None = Field(None, gt=0, description="Train on this many tokens.")
    batch_size: int = Field(8, gt=0, description="Micro-batch size in sequences (one forward/backward).")
    grad_accum: int | None = Field(None, gt=0, description="Micro-batches per optimizer step; give this or effective_batch_size, not both.")
    effective_batch_size: int | None = Field(None, gt=0, description="Sequences per optimizer step; gradient accumulation is derived (must be a multiple of batch_size).")
    learning_rate: float = Field(3e-4, ge=0.0, description="Peak learning rate (flag --lr).")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Final learning rate as a fraction of the peak (cosine and wsd).")
    lr_schedule: Literal["cosine", "constant", "wsd"] = Field("cosine", description="Linear warmup, then cosine decay, constant, or warmup-stable-decay.")
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear warmup.")
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="wsd only: fraction of training spent in the final decay.")
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW weight decay (flag --wd).")
    decay_norms_and_embeddings: bool = Field(False, description="Also apply weight decay to norms, biases and embeddings.")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW beta1.")
    adam_beta2: float = Field(0.95, ge=0.0, lt=1.0, description="AdamW beta2.")
    adam_eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0.0, description="Clip the global gradient norm to this value (0 disables).")
    eval_steps: int | None = Field(None, gt=0, description="Evaluate every N optimizer steps (and always at each epoch end).")
    eval_max_batches: int | None = Field(None, gt=0, description="Cap on validation batches per evaluation (default: the whole set).")
    log_steps: int = Field(10, gt=0, description="Write a train metrics line every N optimizer steps.")
    save_steps: int | None = Field(None, gt=0, description="Write checkpoints/step-N every N optimizer steps.")
    save_total_limit: int = Field(1, ge=1, description="Keep the newest N periodic checkpoints.")
    early_stopping_patience: int = Field(0, ge=0, description="Stop after this many evaluations without a val-loss improvement (0 disables).")
    max_recoveries: int = Field(3, ge=0, description="Non-finite loss recoveries allowed before the run stops.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Device; auto picks cuda, then mps, then cpu.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="Compute precision (bf16/fp16 via autocast; weights and optimizer state stay fp32). auto: bf16 where the device computes it natively (CUDA with bf16, CPUs with AMX / AVX-512 BF16), else fp32; the choice is frozen into the run's config.yaml, so a resume on other hardware keeps it.")
    strategy: Literal["auto", "single", "ddp", "fsdp"] = Field("auto", description="single process, or data-parallel under torchrun/srun: ddp (DistributedDataParallel) or fsdp (FSDP2, sharded); auto = single without a launcher, ddp with one. batch_size is per process: the global batch is batch_size x grad_accum x processes.")
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig, description="FSDP2 settings (training.strategy=fsdp).")
    distributed_timeout_minutes: float = Field(30, gt=0, description="Under torchrun/srun: how long a collective (a step's all-reduce, a checkpoint save) waits for a process that stopped answering before the run fails with a clear error; the previous checkpoint stays intact.")
    compile: bool | Literal["auto"] = Field("auto", description="torch.compile the training step: true, false, or auto (compile fixed-shape pretraining and post-training runs of 1000+ steps on CPU with a C++ compiler, or CUDA). A compile error falls back to eager with a warning.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    best_metric: Literal["new", "original", "exact_match"] = Field("new", description="Post-training: which validation set (val:new or val:original) drives best/ and early stopping; exact_match: the greedy captions' exact-match rate instead of the loss (vision).")
    freeze: list[str] = Field(default_factory=list, description="Freeze parameters whose names match these patterns (fnmatch, e.g. model.layers.[0-3].*).")
    freeze_first_blocks: int = Field(0, ge=0, description="Freeze the embeddings and the first N decoder blocks.")
    train_only_head: bool = Field(False, description="Train only the output head (lm_head) and final norm.")
    lr_groups: dict[str, float] = Field(default_factory=dict, description="Learning rate per parameter-name pattern (first match wins); others use learning_rate.")
    layer_lr_decay: float | None = Field(None, gt=0.0, le=1.0, description="Layer-wise LR decay: block i gets learning_rate * decay^(n_layers - i); embeddings the lowest.")
    unfreeze_top_blocks: int | None = Field(None, gt=0, description="Progressive unfreezing: start with only the top K blocks (and head) trainable.")
    unfreeze_every_steps: int | None = Field(None, gt=0, description="Progressive unfreezing: make one more block trainable every S steps.")
    train_only: list[str] = Field(default_factory=list, description="Train only the parameters matching these patterns (fnmatch on names, or 'router' for a mixture of experts' routers); freeze the rest.")
    active_expert: int | None = Field(None, ge=0, description="Mixture of experts: train expert I only, every token routed to it; the other experts and the routers are frozen (sequential expert runs).")
    freeze_shared: bool = Field(False, description="With active_expert: also freeze the shared weights (embeddings, attention, norms, head).")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_setting(cls, value):
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError(f"training.compile must be true, false or auto (got {value!r})")

    @model_validator(mode="after")
    def _one_length_and_one_batch(self) -> TrainingConfig:
        lengths = [k for k in ("max_steps", "epochs", "num_training_samples", "num_training_tokens")
                   if getattr(self, k) is not None]
        if len(lengths) > 1:
            raise ValueError(f"give only one training length, got {' and '.join('training.' + k for k in lengths)}")
        if self.grad_accum is not None and self.effective_batch_size is not None:
            raise ValueError("give training.grad_accum or training.effective_batch_size, not both")
        if self.effective_batch_size is not None and self.effective_batch_size % self.batch_size:
            raise ValueError(
                f"training.effective_batch_size ({self.effective_batch_size}) must be a multiple of "
                f"training.batch_size ({self.batch_size})")
        return self

    @property
    def accumulation_steps(self) -> int:
        """Micro-batches per optimizer step on each process, derived from the batch keys.

        `effective_batch_size` is the global batch: with N processes (torchrun), each accumulates
        effective / (batch_size x N) micro-batches, so the same config trains the same steps at
        any process count.
        """
        if self.grad_accum is not None:
            return self.grad_accum
        if self.effective_batch_size is not None:
            per_step = self.batch_size * world_size()
            if self.effective_batch_size % per_step:
                raise UserError(f"training.effective_batch_size ({self.effective_batch_size}) must be a multiple of "
                                f"training.batch_size x processes ({self.batch_size} x {world_size()})")
            return self.effective_batch_size // per_step
        return 1


with warnings.catch_warnings():
    # `validate` is the key users write; as a field it shadows pydantic's deprecated
    # BaseModel.validate classmethod, which nothing here uses.
    warnings.filterwarnings("ignore", message='Field name "validate"')

    class CheckpointConfig(Section):
        """Which checkpoint a stage starts from (post-train, SFT, DPO), and what state it keeps."""

        source_path: str | None = Field(None, description="Checkpoint or run dir to start from; {run_name}, {seed}, {stage}, {preset}, {backbone}, {run_id} and {section.key} placeholders are filled from this config (and the previous-run cache).")
        select: Literal["best", "final", "latest"] = Field("best", description="For a run dir: which of its checkpoints to use.")
        validate: bool = Field(True, description="Check the source checkpoint's files, config and tokenizer fingerprint before starting.")
        cache_file: Path | None = Field(None, description="Previous-run cache (JSON) every training run writes; default $TEMPERING_CACHE_DIR or ~/.cache/tempering, file last_run.json.")
        reset_optimizer: bool = Field(False, description="Post-training: start with empty optimizer state instead of the source's.")
        reset_scheduler: bool = Field(False, description="Post-training: restart the learning-rate schedule (warmup included) instead of continuing the source's.")
        reset_step: bool = Field(False, description="Post-training: count steps from 0 instead of continuing the source's step counter.")
        backbone: str | None = Field(None, description="Name of the backbone a run continues; fills {backbone} (default: in source_path the previous run's, elsewhere the source checkpoint's preset or model type).")
        run_id: str | None = Field(None, description="Id of the run a run continues; fills {run_id} (default: in source_path the previous run's from the cache file, elsewhere the source checkpoint's).")
        expert_checkpoint_dir: Path | None = Field(None, description="Sequential expert runs: the directory of expert_<I>.safetensors and shared.safetensors a run starts from and saves into (with training.active_expert).")


class SftConfig(Section):
    """Supervised fine-tuning on chats."""

    template: str = Field("chatml", description="Chat template name, or 'tokenizer' to use the tokenizer's own.")
    packing: bool = Field(True, description="Pack examples into sequences (attention stays within each example).")
    pack_length: int | None = Field(None, gt=0, description="Tokens per packed row (default data.seq_len, which still caps each example). Longer rows fill better when many examples exceed half of data.seq_len, at more attention work per token; lower batch_size to keep the tokens per step (`temper inspect-data` shows the fill).")
    train_on_prompt: bool = Field(False, description="Also put loss on system/user/tool tokens.")
    truncation: Literal["right", "left", "drop"] = Field("right", description="What to do with an example longer than data.seq_len.")


class DpoConfig(Section):
    """Direct preference optimisation."""

    beta: float = Field(0.1, gt=0.0, description="Strength of the pull towards the reference policy.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="Preference loss.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="Assumed fraction of flipped preference labels (sigmoid loss).")
    ref_checkpoint: str | None = Field(None, description="Reference model; default: a frozen copy of the initial policy.")
    precompute_ref: bool = Field(False, description="Compute reference log-probs in one pass and free the reference model.")


class MlmConfig(Section):
    """Masked-LM pretraining of an encoder (`--objective mlm`)."""

    mask_probability: float = Field(0.15, gt=0.0, lt=1.0, description="Fraction of tokens selected for prediction; of those 80% become the mask token, 10% a random token, 10% stay.")
    whole_word_masking: bool = Field(False, description="Select whole words (all their word pieces) instead of single tokens.")


class NerConfig(Section):
    """Token classification (`--task ner`): data, label alignment and label maps."""

    labels: list[str] = Field(default_factory=list, description="Label names by id: for data whose tags are ids, and to fix the label set (other tags are bad rows).")
    label_all_tokens: bool = Field(False, description="Put the word's label on every word piece (B- becomes I- after the first), not only on the first.")
    scheme_errors: Literal["repair", "error"] = Field("repair", description="An I-X that starts an entity (IOB2 violation): turn it into B-X, or refuse the row's file.")
    label_mapping: Literal["strict", "merge"] = Field("strict", description="Continued training on data whose labels differ from the checkpoint's: refuse (strict) or add the new labels to the head (merge).")
    group_by_length: bool = Field(False, description="Batch sentences of similar length together (sorted within windows of 50 batches, batch order shuffled): ~1.2x the tokens/s, but ~1.4 points less F1 in our benchmark. Default false: each batch drawn at random, as HF Trainer's default sampler (padding is skipped, not computed).")


class LoraConfig(Section):
    """LoRA: train low-rank adapters instead of the full weights (post-train, sft, dpo)."""

    r: int | None = Field(None, gt=0, description="LoRA rank; set it to train adapters on the target modules and freeze every other weight (flag --lora-r).")
    alpha: float | None = Field(None, gt=0.0, description="LoRA scale: the update is (alpha / r) * B @ A (default 2 * r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"], description="Linear layers that get adapters: plain names match in every block (q_proj; w1, or gate_proj with a shared expert, for MoE experts; gate for MoE routers), dotted or wildcard names are fnmatch patterns on full module names.")


class SpeechConfig(Section):
    """Speech families: the ASR alphabet and SpecAugment masking of training features."""

    alphabet: str = Field("abcdefghijklmnopqrstuvwxyz' ", min_length=1, description="Characters an ASR model spells (its CTC classes besides the blank); transcripts are normalised to them. Ignored when tokenizer.path gives a piece tokenizer.")
    freq_masks: int = Field(2, ge=0, description="SpecAugment: mel-bin bands masked per training utterance (0 disables).")
    freq_mask_bins: int = Field(15, ge=0, description="SpecAugment: widest masked band, in mel bins.")
    time_masks: int = Field(2, ge=0, description="SpecAugment: runs of frames masked per training utterance (0 disables).")
    time_mask_frames: int = Field(40, ge=0, description="SpecAugment: longest masked run, in 10 ms frames (all runs together at most 20% of the utterance).")
    asr_checkpoint: str | None = Field(None, description="Talker: the ASR (audio_encoder) checkpoint whose CTC alignments give each character's duration and whose CER on the synthesised validation sentences is the intelligibility (flag --asr-checkpoint).")


def percentile_band(spec: str) -> tuple[float, float]:
    """`LOW:HIGH` percentiles (0 <= LOW < HIGH <= 100) as a pair; ValueError says what is wrong."""
    low, sep, high = spec.partition(":")
    try:
        band = (float(low), float(high)) if sep else None
    except ValueError:
        band = None
    if band is None or not 0 <= band[0] < band[1] <= 100:
        raise ValueError(f"prep.ppl_keep {spec!r} is not a percentile band LOW:HIGH with 0 <= LOW < HIGH <= 100 "
                         "(e.g. 0:70)")
    return band


class VisionConfig(Section):
    """Image captioning with a vision preset or checkpoint (the vision family)."""

    lm: str | None = Field(None, description="Decoder checkpoint or run dir whose language model writes the captions (flag --lm); a vision pretrain run needs it, and every vision checkpoint embeds a copy.")
    prompt: str = Field("", description="Text after the image positions and before the caption, never scored (generate --prompt replaces it).")
    train_lm: bool = Field(False, description="Also train the language model; by default it is frozen and the encoder and projector train.")
    augment: bool = Field(True, description="Training images get a random shift of up to 1/16 of their side and a ±10% brightness and contrast change, seeded per epoch and image.")


class PrepConfig(Section):
    """`temper prep`: raw files to token shards."""

    text_unit: Literal["block", "file", "line"] = Field("block", description=".txt files: a document per blank-line-separated block, per file, or per line.")
    text_field: str = Field("text", description="JSONL field / Parquet or CSV column holding the text.")
    invalid_utf8: Literal["replace", "skip"] = Field("replace", description="Invalid UTF-8: replace bad bytes (counted per file) or skip the file.")
    max_bad_line_fraction: float = Field(0.01, ge=0.0, le=1.0, description="Fail when more than this fraction of JSONL lines in a file are malformed.")
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of documents written to the val split (by content hash, deterministic).")
    seq_len: int | None = Field(None, gt=0, description="Intended training sequence length; recorded in the manifest and checked against the val split size.")
    dedup: bool = Field(True, description="Drop exact-duplicate documents (by content hash).")
    shard_tokens: int = Field(100_000_000, gt=0, description="Tokens per shard file before a new one starts.")
    batch_size: int = Field(1000, gt=0, description="Documents per tokenizer batch.")
    workers: int = Field(1, ge=1, le=256, description="Processes that compute quality rules and MinHash signatures (the output is the same for any number).")
    chunk_size: int | None = Field(None, gt=0, description="Cut documents longer than this (chunk_unit) at paragraph, line, sentence, then word boundaries; off when unset.")
    chunk_unit: Literal["chars", "tokens"] = Field("chars", description="Unit of chunk_size: characters, or tokens of the prep tokenizer.")
    near_dedup: bool = Field(False, description="Remove near-duplicates: MinHash of word 5-gram shingles, LSH, clusters keep their first document.")
    minhash_perm: int = Field(112, ge=2, le=1024, description="MinHash permutations per document (signature length).")
    near_dedup_threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity above which two documents are near-duplicates; sets bands x rows unless given.")
    near_dedup_bands: int | None = Field(None, gt=0, description="LSH bands (give with near_dedup_rows; bands x rows <= minhash_perm); default: derived from the threshold.")
    near_dedup_rows: int | None = Field(None, gt=0, description="MinHash values per LSH band (give with near_dedup_bands).")
    verify_jaccard: bool = Field(False, description="Keep only candidate pairs whose exact shingle Jaccard reaches near_dedup_threshold.")
    ppl_model: str | None = Field(None, description="Checkpoint (dir or run dir) whose perplexity scores each document; enables the perplexity filter.")
    ppl_keep: str | None = Field(None, description="Keep documents whose perplexity rank is within this percentile band LOW:HIGH (e.g. 0:70).")
    ppl_max: float | None = Field(None, gt=0.0, description="Keep documents whose perplexity is at most this.")
    ppl_max_tokens: int = Field(512, gt=0, le=1_000_000, description="Score only the first N tokens of each document.")
    ppl_batch_size: int = Field(16, gt=0, le=4096, description="Documents per scoring batch.")
    ppl_report_only: bool = Field(False, description="Score and report perplexities without removing any document.")
    quality_filter: bool = Field(False, description="Apply the Gopher/C4-style quality rules below.")
    quality_min_words: int = Field(50, ge=0, description="Quality rule: remove documents with fewer words.")
    quality_max_words: int = Field(100_000, gt=0, description="Quality rule: remove documents with more words.")
    quality_min_mean_word_length: float = Field(3.0, ge=0.0, description="Quality rule: remove documents whose mean word length is below this.")
    quality_max_mean_word_length: float = Field(10.0, gt=0.0, description="Quality rule: remove documents whose mean word length is above this.")
    quality_max_symbol_ratio: float = Field(0.1, ge=0.0, description="Quality rule: most '#' and ellipses per word.")
    quality_max_non_alpha_words: float = Field(0.2, ge=0.0, le=1.0, description="Quality rule: largest fraction of words with no letter.")
    quality_max_ellipsis_lines: float = Field(0.3, ge=0.0, le=1.0, description="Quality rule: largest fraction of lines ending in an ellipsis.")
    quality_max_bullet_lines: float = Field(0.9, ge=0.0, le=1.0, description="Quality rule: largest fraction of lines starting with a bullet.")
    quality_max_duplicate_lines: float = Field(0.3, ge=0.0, le=1.0, description="Quality rule: largest fraction of lines repeating an earlier line.")
    quality_max_duplicate_ngrams: float = Field(0.15, ge=0.0, le=1.0, description="Quality rule: largest fraction of characters in repeated word 5-grams.")
    dataset_limit: str | None = Field(None, description="Per-source caps after filtering: NAME=N[docs|tokens],... (a source: a file given by name, by its stem; an input dir, or its first-level folders).")
    max_source_fraction: float | None = Field(None, gt=0.0, le=1.0, description="Cap every source at this fraction of the total tokens, after filtering and dataset_limit.")

    @model_validator(mode="after")
    def _stage_settings_agree(self) -> PrepConfig:
        if (self.near_dedup_bands is None) != (self.near_dedup_rows is None):
            raise ValueError("give prep.near_dedup_bands and prep.near_dedup_rows together (or neither)")
        if self.near_dedup_bands is not None and self.near_dedup_bands * self.near_dedup_rows > self.minhash_perm:
            raise ValueError(f"prep.near_dedup_bands x prep.near_dedup_rows = {self.near_dedup_bands * self.near_dedup_rows} "
                             f"exceeds prep.minhash_perm = {self.minhash_perm}")
        if self.ppl_keep is not None:
            percentile_band(self.ppl_keep)
        if self.ppl_model is None and (self.ppl_keep or self.ppl_max or self.ppl_report_only):
            raise ValueError("prep.ppl_keep, prep.ppl_max and prep.ppl_report_only need prep.ppl_model (--ppl-model CHECKPOINT)")
        if self.ppl_keep is not None and self.ppl_max is not None:
            raise ValueError("give prep.ppl_keep or prep.ppl_max, not both")
        if self.quality_min_words > self.quality_max_words:
            raise ValueError("prep.quality_min_words exceeds prep.quality_max_words")
        if self.quality_min_mean_word_length > self.quality_max_mean_word_length:
            raise ValueError("prep.quality_min_mean_word_length exceeds prep.quality_max_mean_word_length")
        return self


class PathsConfig(Section):
    """Where runs go when no --save-dir is given."""

    output_base: Path | None = Field(None, description="Parent folder of runs: a run without run.save_dir writes to output_base/run.name.")
    debug_base: Path | None = Field(None, description="Parent folder of debug runs (debug.enabled); default output_base/debug.")


class CheckpointingConfig(Section):
    """Extra checkpoints besides the resumable ones (training.save_steps)."""

    inference_checkpoint_steps: int | None = Field(None, description="Every N steps write inference_checkpoints/step-N/: weights, config.json, tokenizer and generation config only (no optimizer state), loadable by transformers. null or <= 0: none, and no folder.")


class SlurmConfig(Section):
    """`temper submit`: the sbatch job that runs this config on a SLURM cluster."""

    partition: str | None = Field(None, description="Partition (sbatch --partition); the cluster's default when null.")
    num_nodes: int = Field(1, ge=1, description="Nodes (sbatch --nodes); torchrun starts on each.")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node (sbatch --gpus-per-node); one training process per GPU.")
    processes_per_node: int | None = Field(None, ge=1, description="Training processes per node; default gpus_per_node, or 1 on CPU nodes.")
    cpus_per_gpu: int | None = Field(None, ge=1, description="CPU cores per GPU (sbatch --cpus-per-gpu); on CPU nodes, cores per process.")
    wall_time: str = Field("24:00:00", description="Time limit per job (sbatch --time: [D-]HH:MM:SS, or MM in quotes); the run checkpoints and requeues itself before it.")
    signal_time_seconds: int = Field(300, ge=1, description="Seconds before the wall time at which SLURM sends SIGUSR1: the run checkpoints, exits and requeues.")
    max_failures: int = Field(3, ge=0, description="Crashes (exit not caused by the signal) resubmitted before the job gives up.")
    job_name: str | None = Field(None, description="Job name (sbatch --job-name); default the run name.")
    extra_sbatch: list[str] = Field(default_factory=list, description="Extra #SBATCH lines, e.g. ['--account=proj', '--qos=high'].")
    setup: list[str] = Field(default_factory=list, description="Shell lines run before training, e.g. ['module load cuda', 'source .venv/bin/activate'].")
    master_port: int = Field(29500, ge=1, le=65535, description="Rendezvous port on the first node.")
    python: str | None = Field(None, description="Python that runs training on the nodes (default: the one running temper submit; python to take it from PATH after slurm.setup).")

    @field_validator("wall_time", mode="before")
    @classmethod
    def _wall_time_text(cls, value):
        # Unquoted, YAML 1.1 reads 24:00:00 as 86400 (seconds): read such numbers back. A smaller one
        # may be sbatch's bare minutes or YAML's MM:SS, so it must be quoted.
        if isinstance(value, bool) or not isinstance(value, int):
            return value
        if value < 3600:
            raise ValueError(f"slurm.wall_time must be text in quotes, e.g. \"30\" (minutes) or \"45:00\"; "
                             f"YAML read the number {value}")
        days, rest = divmod(value, 86400)
        clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
        return f"{days}-{clock}" if days else clock


class DebugConfig(Section):
    """Switches for testing the engine's fault handling, and debug runs."""

    enabled: bool = Field(False, description="A debug run: written under paths.debug_base instead of paths.output_base.")
    override_existing: bool = Field(False, description="With debug.enabled: wipe an existing debug run of the same name instead of resuming it (never a non-debug run).")
    inject_nan_at_step: int | None = Field(None, gt=0, description="Make the loss non-finite at this step, once, to exercise recovery.")
    kill_during_save_at_step: int | None = Field(None, gt=0, description="SIGKILL the process halfway through writing this step's checkpoint, to exercise crash safety.")
    kill_at_step: int | None = Field(None, gt=0, description="SIGKILL one process (rank debug.kill_rank) right after this optimizer step, before any save: a crash mid-run.")
    kill_rank: int = Field(0, ge=0, description="Which rank debug.kill_at_step kills (0 without a launcher).")


TASK_ALIASES = {"ner": "token_classification", "mlm": "masked_lm", "clm": "causal_lm"}


TRACKERS = ("tensorboard", "mlflow", "wandb")


class TrackingConfig(Section):
    """Where training records go besides metrics.jsonl: TensorBoard, MLflow, W&B; system telemetry."""

    report_to: list[Literal["tensorboard", "mlflow", "wandb", "all", "none"]] = Field(default_factory=list, description="Trackers that receive every metrics.jsonl record: any of tensorboard, mlflow, wandb (comma-separated or a list); all = those installed; none. A listed tracker whose package is missing stops the run at start.")
    experiment: str | None = Field(None, description="MLflow experiment name (default <run.name>-<stage>; post-training: <experiment or run.name>-continued-<backbone>, the backbone being checkpoint.backbone, else the encoder a token-classification run records, else the source run's name).")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking server or store URI (default: sqlite:///<run dir's parent>/mlflow.db).")
    wandb_project: str = Field("tempering", description="W&B project.")
    wandb_name: str | None = Field(None, description="W&B run name (default: run.name; post-training: <model>_continued_<run_id>, as in MLflow).")
    wandb_tags: list[str] = Field(default_factory=list, description="W&B run tags.")
    wandb_mode: Literal["offline", "online"] = Field("offline", description="W&B mode: offline writes <run dir>/wandb/ (upload later with `wandb sync`); online needs a login.")
    telemetry_steps: int | None = Field(None, ge=0, description="Write a system telemetry record (RSS, RAM, CPU, device memory, data-wait fraction) every N optimizer steps (default: with each train log line; 0 disables).")

    @field_validator("report_to", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def trackers(self) -> list[str]:
        """The trackers asked for by name (`all` and `none` excluded), in report_to order."""
        return [name for name in dict.fromkeys(self.report_to) if name in TRACKERS]


class Config(Section):
    """The whole run: one YAML file, validated at load."""

    stage: Literal["pretrain", "post_train", "sft", "dpo", "prep"] = Field("pretrain", description="Which stage this config is for (set by the command).")
    task: Literal["auto", "causal_lm", "masked_lm", "token_classification"] = Field("auto", description="What pretrain/post-train train: causal_lm (decoders), masked_lm (--objective mlm), token_classification (--task ner); auto is the model family's own (causal_lm, masked_lm for encoders) or the checkpoint's head.")
    run: RunConfig = Field(default_factory=RunConfig, description="Run name, directory and seed.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Architecture.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenizer.")
    data: DataConfig = Field(default_factory=DataConfig, description="Training and validation data.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Optimisation loop.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Starting checkpoint.")
    sft: SftConfig = Field(default_factory=SftConfig, description="SFT options.")
    dpo: DpoConfig = Field(default_factory=DpoConfig, description="DPO options.")
    mlm: MlmConfig = Field(default_factory=MlmConfig, description="Masked-LM options.")
    ner: NerConfig = Field(default_factory=NerConfig, description="Token-classification options.")
    prep: PrepConfig = Field(default_factory=PrepConfig, description="Data preparation options.")
    debug: DebugConfig = Field(default_factory=DebugConfig, description="Fault-injection switches.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Trackers (TensorBoard, MLflow, W&B) and system telemetry.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapters.")
    paths: PathsConfig = Field(default_factory=PathsConfig, description="Where runs go without --save-dir.")
    checkpointing: CheckpointingConfig = Field(default_factory=CheckpointingConfig, description="Inference checkpoints.")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig, description="SLURM submission (temper submit).")
    offline: bool = Field(False, description="No network: set the offline switches of Hugging Face (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_DATASETS_OFFLINE) and W&B (WANDB_MODE=offline), for compute nodes without internet.")
    vision: VisionConfig = Field(default_factory=VisionConfig, description="Image captioning (vision family).")
    speech: SpeechConfig = Field(default_factory=SpeechConfig, description="Speech recognition and synthesis options.")

    def validation_split(self) -> tuple[float, int]:
        """(fraction, seed) of the split this run holds out of its training data: post-training's val:new rule."""
        if self.stage == "post_train":
            return self.data.new_validation_split(self.run.seed)
        return self.data.val_split, self.run.seed

    @field_validator("task", mode="before")
    @classmethod
    def _task_alias(cls, value):
        return TASK_ALIASES.get(value, value) if isinstance(value, str) else value
