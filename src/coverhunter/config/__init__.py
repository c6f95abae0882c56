"""Every setting of the package, in one place: frozen dataclasses, typed, with their defaults.

- :mod:`.training`: the training run's ``Config`` (sections ``features``, ``data``,
  ``model``, ``loss``, ``optim``, ``eval``) and the extractor's ``ExtractConfig``;
- :mod:`.io`: those from and to YAML (ours or the seed's ``hparams.yaml``), with
  ``section.key=value`` overrides.

This package sits at the bottom of the import graph: it imports nothing of ``coverhunter``
but ``utils`` (on first use, to write a file).
"""

from .io import (
    ConfigError,
    apply_overrides,
    from_dict,
    is_seed_format,
    load_config,
    load_extract_config,
    read_yaml,
    save_yaml,
    to_dict,
)
from .training import (
    BUDGET_CLOCKS,
    FRONT_ENDS,
    OBJECTIVES,
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

__all__ = [
    "BUDGET_CLOCKS",
    "FRONT_ENDS",
    "OBJECTIVES",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExtractConfig",
    "FeatureConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SpecAugConfig",
    "SplitConfig",
    "apply_overrides",
    "from_dict",
    "is_seed_format",
    "load_config",
    "load_extract_config",
    "read_yaml",
    "save_yaml",
    "to_dict",
]
