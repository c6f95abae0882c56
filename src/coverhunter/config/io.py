"""Settings to and from YAML: dataclasses built from plain dicts (types checked, unknown
keys an error), ``section.key=value`` overrides, the extractor's ``hparams.yaml`` and the
trainer's, ours (sections) or the seed's (flat keys, translated).
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import warnings
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .training import (
    Config,
    DataConfig,
    EvalConfig,
    ExtractConfig,
    FeatureConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SpecAugConfig,
    SplitConfig,
)

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration file or override is malformed."""


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
    from ..utils import atomic_write_text

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
