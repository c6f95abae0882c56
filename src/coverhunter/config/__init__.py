"""Every setting of the package, in one place: frozen dataclasses, typed, with their defaults.

- :mod:`.training`: the training run's ``Config`` (sections ``features``, ``data``,
  ``model``, ``loss``, ``optim``, ``eval``) and the extractor's ``ExtractConfig``;
- :mod:`.io`: those from and to YAML (ours or the seed's ``hparams.yaml``), with
  ``section.key=value`` overrides;
- :mod:`.search`: ``IdentifyOptions``, every setting of a search (``identify``, its batch
  mode, the service);
- :mod:`.service`: ``ServeConfig``, what ``coverhunter serve`` is started with;
- :mod:`.cli_options`: command-line options built from those dataclasses' fields, so each
  option's default and help are written once, on its field.

This package sits at the bottom of the import graph: it imports nothing of ``coverhunter``
but ``utils`` (on first use, to write a file).
"""

from .cli_options import add_arguments, from_arguments, positive_int
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
from .search import IdentifyOptions, check_search
from .service import ServeConfig
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
    "IdentifyOptions",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "ServeConfig",
    "SpecAugConfig",
    "SplitConfig",
    "add_arguments",
    "apply_overrides",
    "check_search",
    "from_arguments",
    "from_dict",
    "is_seed_format",
    "load_config",
    "load_extract_config",
    "positive_int",
    "read_yaml",
    "save_yaml",
    "to_dict",
]
