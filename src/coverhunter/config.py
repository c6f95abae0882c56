"""Frozen dataclass configuration, loaded from YAML (ours or the seed's ``hparams.yaml``)."""

from __future__ import annotations

import ast
import dataclasses
import logging
import warnings
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration file or override is malformed."""


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes a CQT (the original's fixed values are the defaults)."""

    # sample rate every recording is resampled to, in Hz
    sample_rate: int = 16000
    # CQT hop in samples: 640 samples = 40 ms = 25 frames per second
    hop_length: int = 640
    # lowest centre frequency, in Hz
    fmin: float = 32.0
    # number of CQT bins (8 octaves of 12 bins: 32 Hz .. 7.7 kHz)
    n_bins: int = 96
    bins_per_octave: int = 12
    # "float32" (default: stored as float32) or "float64" (bit-for-bit the original's dtype)
    precision: str = "float32"

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass(frozen=True)
class SplitConfig:
    """Train/validation/test split, made by work before any augmentation."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class ExtractConfig:
    """``DATA_DIR/hparams.yaml`` of the feature extractor."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    # tempo factors; 1.0 is the original recording and is always kept
    aug_speed_mode: tuple[float, ...] = (1.0,)
    # splits whose tracks get tempo copies (copies never leave their original's split)
    aug_splits: tuple[str, ...] = ("train",)
    # worker processes; 0 = one per CPU core
    num_workers: int = 0
    # fine chroma views written beside each CQT (coverhunter.chroma.VIEWS; () = none)
    chroma_views: tuple[str, ...] = ("c3", "c1")
    # "fifths": a "fine_chroma" model rotates each chunk to its own key first (the phase
    # of its circle-of-fifths profile), so a transposed cover gives the same input;
    # "none": the network must learn key invariance from the key-shift augmentation
    chroma_key: str = "fifths"


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the CoverHunter network (defaults: the original's)."""

    # CQT bins of the input (front ends "cqt" and "chroma"; "fine_chroma" reads 12 per view)
    input_dim: int = 96
    embed_dim: int = 128
    # Conformer width, depth, heads, feed-forward width and depthwise kernel
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    ffn_dim: int = 256
    conv_kernel: int = 15
    dropout: float = 0.1
    # classifier rows; 0 = the number of works in the training data
    n_classes: int = 0
    # "cqt": the CQT bins as they are (the original); "chroma": fold the octaves into
    # 12 pitch classes inside the network (each frame's peak at 0 dB, floor -60 dB), which
    # makes the input independent of voicing and octave, as real covers change them;
    # "fine_chroma": not the CQT at all but the tuned 36-bin chroma that extract stores
    # beside it (coverhunter.chroma, 2.5 frames/s, views `chroma_views` side by side)
    front_end: str = "cqt"
    # the stored chroma views a "fine_chroma" model reads (coverhunter.chroma.VIEWS), in
    # this order: the input is (frames, 12 * len(chroma_views)); ignored by the others
    chroma_views: tuple[str, ...] = ("c3", "c1")
    # "fifths": a "fine_chroma" model rotates each chunk to its own key first (the phase
    # of its circle-of-fifths profile), so a transposed cover gives the same input;
    # "none": the network must learn key invariance from the key-shift augmentation
    chroma_key: str = "fifths"

    def __post_init__(self):
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"model.front_end must be one of {FRONT_ENDS}, got {self.front_end!r}")
        if self.front_end == "fine_chroma" and not self.chroma_views:
            raise ValueError("model.front_end 'fine_chroma' needs at least one of model.chroma_views")
        if self.chroma_key not in ("fifths", "none"):
            raise ValueError(f"model.chroma_key must be 'fifths' or 'none', got {self.chroma_key!r}")


FRONT_ENDS = ("cqt", "chroma", "fine_chroma")
OBJECTIVES = ("classify", "passage")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the focal, triplet and center losses."""

    ce_weight: float = 1.0
    focal_gamma: float = 2.0
    triplet_weight: float = 0.1
    triplet_margin: float = 0.3
    center_weight: float = 0.0
    # "classify": focal work classification + batch-hard triplet (the original, the
    # control); "passage": InfoNCE between a passage of one version and the passage of
    # another version that plays the same music (coverhunter.passages; needs
    # data.align_path), every other passage of the batch and of the queue a negative
    objective: str = "classify"
    # InfoNCE softmax temperature (cosine similarities are divided by it)
    temperature: float = 0.1
    # keys of past batches kept as extra negatives (0 = the batch only): a large
    # effective batch for about a third more time per step (the keys come from a
    # momentum copy of the encoder, coverhunter.passages.PassageLoss)
    queue_size: int = 0
    # the momentum copy's weights: m * its own + (1 - m) * the encoder's, every step
    momentum: float = 0.99

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"loss.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.temperature <= 0 or self.queue_size < 0 or not 0 <= self.momentum < 1:
            raise ValueError(
                f"loss.temperature must be > 0, loss.queue_size >= 0 and "
                f"loss.momentum in [0, 1), got {self.temperature}, "
                f"{self.queue_size}, {self.momentum}"
            )


@dataclass(frozen=True)
class SpecAugConfig:
    """Augmentation applied to CQT chunks during training."""

    # octave-free pitch roll: shift by a whole number of bins in [-roll_max, roll_max]
    roll_prob: float = 0.5
    roll_max: int = 12
    # rectangles filled with a random dB value
    erase_prob: float = 0.5
    erase_num: int = 4
    erase_time: float = 0.25
    erase_freq: float = 0.1
    # tempo stretch on the CQT: factor uniform in [1 - stretch_range, 1 + stretch_range]
    stretch_prob: float = 0.5
    stretch_range: float = 0.2


@dataclass(frozen=True)
class DataConfig:
    """Where the training lists are and how chunks are cut."""

    train_path: str = "train.txt"
    val_path: str = ""
    # chunk lengths in pooled frames (mean_size raw frames each); one batch uses one length
    chunk_frame: tuple[int, ...] = (1125, 900, 675)
    mean_size: int = 3
    batch_size: int = 16
    m_per_class: int = 8
    num_workers: int = 0
    spec_augment: SpecAugConfig = field(default_factory=SpecAugConfig)
    # fine stage of coarse-to-fine: an alignment file (coverhunter align) and the share
    # of works per batch drawn as aligned chunks (the rest are random crops)
    align_path: str = ""
    aligned_prob: float = 1.0


BUDGET_CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule and stopping."""

    learning_rate: float = 1e-3
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    weight_decay: float = 0.01
    warmup_steps: int = 100
    # cosine decay from learning_rate to min_lr over max_steps (after warm-up)
    min_lr: float = 1e-4
    max_epochs: int = 30
    # optimiser steps per epoch; 0 = one pass of the m-per-class sampler
    steps_per_epoch: int = 0
    grad_clip: float = 1.0
    # stop after this many epochs without improvement of the monitored value; 0 = never
    patience: int = 5
    seed: int = 1234
    # "auto", "cpu", "cuda", "cuda:1", "mps"
    device: str = "auto"
    amp: bool = False
    every_n_epoch_to_save: int = 1
    # budget of the training epochs in seconds, validation included (0 = none): after each
    # epoch the planned number of epochs shrinks to what still fits, and the cosine decay
    # follows, so a run on rented time ends annealed instead of cut off
    time_budget_s: float = 0.0
    # what the budget counts: "wall" (elapsed time: rented machines, GPUs) or "cpu" (this
    # process's CPU time: arms compared at equal CPU time stay comparable when other jobs
    # share the machine)
    budget_clock: str = "wall"

    def __post_init__(self):
        if self.budget_clock not in BUDGET_CLOCKS:
            raise ValueError(f"optim.budget_clock must be one of {BUDGET_CLOCKS}, got {self.budget_clock!r}")


@dataclass(frozen=True)
class EvalConfig:
    """How whole recordings become chunk embeddings and distances."""

    # window and hop, in seconds, of the chunks that cover a whole track (tail included)
    chunk_s: float = 135.0
    hop_s: float = 135.0
    # "min": min over chunk pairs of 1 - cos (the original's rule); "mean": pooled embedding
    distance: str = "min"
    batch_size: int = 32
    # test sets evaluated after each epoch: name -> {query_path, ref_path[, query_in_ref_path]}
    test_sets: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


@dataclass(frozen=True)
class Config:
    """Everything a training run needs; stored in every checkpoint."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------
# building dataclasses from plain dicts


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Coerce a YAML value to the field's declared type, or raise ConfigError."""
    if isinstance(hint, str):
        hint = eval(hint, vars(dataclasses), _TYPES)  # noqa: S307 - our own annotations
    if is_dataclass(hint):
        return from_dict(hint, value or {}, where)
    origin = getattr(hint, "__origin__", None)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = hint.__args__[0]
        return tuple(_convert(v, inner, where) for v in value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, str) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _test_sets_from(value: Any, where: str) -> tuple:
    if isinstance(value, (list, tuple)):  # already in the frozen form
        return tuple((str(n), tuple((str(k), str(v)) for k, v in d)) for n, d in value)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of test-set names")
    out = []
    for name, spec in value.items():
        if not isinstance(spec, dict) or "query_path" not in spec:
            raise ConfigError(f"{where}.{name}: needs at least query_path")
        out.append((str(name), tuple((str(k), str(v)) for k, v in spec.items())))
    return tuple(out)


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        if name == "test_sets":
            kwargs[name] = _test_sets_from(value, f"{where}.{name}")
        else:
            kwargs[name] = _convert(value, known[name].type, f"{where}.{name}")
    return cls(**kwargs)


_TYPES = {
    c.__name__: c
    for c in (
        FeatureConfig,
        SplitConfig,
        ExtractConfig,
        ModelConfig,
        LossConfig,
        SpecAugConfig,
        DataConfig,
        OptimConfig,
        EvalConfig,
        Config,
    )
}
_TYPES.update(tuple=tuple, float=float, int=int, str=str, bool=bool)


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (tuples become lists), for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple):
            if (
                v
                and all(isinstance(x, tuple) and len(x) == 2 for x in v)
                and v
                and isinstance(v[0][0], str)
                and isinstance(v[0][1], tuple)
            ):
                return {n: dict(d) for n, d in v}  # test_sets
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``section.key=value`` overrides (values parsed with ``ast.literal_eval``; the
    YAML spellings ``true``, ``false`` and ``null`` are accepted too)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            yaml_words = {"true": True, "false": False, "null": None, "~": None}
            value = yaml_words.get(raw.strip().lower(), raw)  # else a bare string
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def save_yaml(cfg: Any, path: str | Path) -> None:
    from .utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------------------
# the extractor's DATA_DIR/hparams.yaml

_SEED_EXTRACT_IGNORED = {"add_noise"}


def load_extract_config(path: str | Path | None) -> ExtractConfig:
    """Read an extractor ``hparams.yaml`` (seed keys accepted); a missing file gives defaults."""
    if path is None or not Path(path).exists():
        return ExtractConfig()
    data = read_yaml(path)
    for key in sorted(_SEED_EXTRACT_IGNORED & set(data)):
        warnings.warn(f"{path}: '{key}' of the original is not supported and is ignored", stacklevel=2)
        data.pop(key)
    try:
        return from_dict(ExtractConfig, data, str(path))
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e


# ---------------------------------------------------------------------------
# the trainer's EXP_DIR/config/hparams.yaml: ours (sections) or the seed's (flat keys)

_SECTIONS = {f.name for f in fields(Config)}

# seed key -> (section, our key); values that need no conversion
_SEED_MAP = {
    "train_path": ("data", "train_path"),
    "dev_path": ("data", "val_path"),
    "chunk_frame": ("data", "chunk_frame"),
    "mean_size": ("data", "mean_size"),
    "m_per_class": ("data", "m_per_class"),
    "batch_size": ("data", "batch_size"),
    "num_workers": ("data", "num_workers"),
    "seed": ("optim", "seed"),
    "learning_rate": ("optim", "learning_rate"),
    "adam_b1": ("optim", "adam_b1"),
    "adam_b2": ("optim", "adam_b2"),
    "min_lr": ("optim", "min_lr"),
    "warmup_steps": ("optim", "warmup_steps"),
    "every_n_epoch_to_save": ("optim", "every_n_epoch_to_save"),
    "chunk_s": ("eval", "chunk_s"),
    "input_dim": ("model", "input_dim"),
    "embed_dim": ("model", "embed_dim"),
}
# seed keys that we read elsewhere or deliberately ignore (the seed's format: docs/training.md)
_SEED_IGNORED = {
    "train_sample_path",
    "data_type",
    "mode",
    "cqt",
    "num_gpus",
    "lr_decay",
    "warmup",
    "pool_type",
    "every_n_epoch_to_dev",
}


def _from_seed(data: dict, where: str) -> dict:
    """Translate the original's flat ``hparams.yaml`` into our sections."""
    out: dict[str, dict] = {s: {} for s in _SECTIONS}
    test_sets = {}
    for key, value in data.items():
        if key in _SEED_MAP:
            sec, name = _SEED_MAP[key]
            out[sec][name] = value
        elif key == "encoder":
            enc = value or {}
            out["model"].update(
                {
                    k2: enc[k1]
                    for k1, k2 in (
                        ("output_dims", "d_model"),
                        ("num_blocks", "n_layers"),
                        ("attention_dim", "ffn_dim"),
                    )
                    if k1 in enc
                }
            )
        elif key == "ce":
            out["loss"].update(
                {
                    k2: value[k1]
                    for k1, k2 in (("weight", "ce_weight"), ("gamma", "focal_gamma"))
                    if k1 in value
                }
            )
            if "output_dims" in value:
                out["model"]["n_classes"] = value["output_dims"]
        elif key == "triplet":
            out["loss"].update(
                {
                    k2: value[k1]
                    for k1, k2 in (("weight", "triplet_weight"), ("margin", "triplet_margin"))
                    if k1 in value
                }
            )
        elif key == "center":
            if "weight" in value:
                out["loss"]["center_weight"] = value["weight"]
        elif key == "spec_augmentation":
            sa = {}
            if "random_erase" in (value or {}):
                sa.update(
                    erase_prob=value["random_erase"].get("prob", 0.5),
                    erase_num=value["random_erase"].get("erase_num", 4),
                )
            if "roll_pitch" in (value or {}):
                sa.update(
                    roll_prob=value["roll_pitch"].get("prob", 0.5),
                    roll_max=value["roll_pitch"].get("shift_num", 12),
                )
            out["data"]["spec_augment"] = sa
        elif isinstance(value, dict) and "query_path" in value:
            test_sets[key] = {k: v for k, v in value.items() if k != "every_n_epoch_to_dev"}
        elif key in _SEED_IGNORED:
            log.debug("%s: ignoring the original's key %r", where, key)
        else:
            raise ConfigError(f"{where}: unknown key {key!r} (neither ours nor the original's)")
    if test_sets:
        out["eval"]["test_sets"] = test_sets
    return {k: v for k, v in out.items() if v}


def is_seed_format(data: dict) -> bool:
    return bool(data) and not (set(data) <= _SECTIONS)


def load_config(path: str | Path | dict | None = None, overrides: list[str] | None = None) -> Config:
    """Load a training :class:`Config` from YAML (ours or the seed's) plus overrides.

    Parameters
    ----------
    path : path, dict or None
        YAML file, an already parsed dict, or None for the defaults.
    overrides : list of str, optional
        ``section.key=value`` items, e.g. ``["optim.max_epochs=3"]``.
    """
    where = "config" if path is None or isinstance(path, dict) else str(path)
    data = dict(path) if isinstance(path, dict) else ({} if path is None else read_yaml(path))
    if is_seed_format(data):
        data = _from_seed(data, where)
    data = apply_overrides(data, overrides)
    return from_dict(Config, data, where)
