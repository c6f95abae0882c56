"""Training: CPU, GPU or torchrun/DDP; exact resume; early stopping on validation MAP.

``train(exp_dir)`` reads ``EXP_DIR/config/hparams.yaml`` (ours or the original's) and
writes ``EXP_DIR/checkpoints/{last,best}.pt``, ``EXP_DIR/history.json`` and TensorBoard
scalars in ``EXP_DIR/logs``; the run itself is :class:`coverhunter.trainer.Trainer`.
``evaluate_experiment`` gives an experiment's validation and test-set metrics, and
``coarse_to_fine`` chains coarse training, chunk alignment and fine training.

Imports ``checkpoint``, ``config``, ``dataset``, ``evaluate``, ``trainer``, ``utils``; on
first use ``align``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import load_model
from .config import Config, load_config, save_yaml, to_dict
from .dataset import read_dataset
from .evaluate import validate_model
from .trainer import Trainer, TrainResult, dist_info, teardown_distributed
from .utils import atomic_write_text, resolve_device, resolve_path, sha256_file


def evaluate_experiment(exp_dir: str | Path, device: str | None = None) -> dict:
    """Validation and test-set metrics of an experiment's best (else last) checkpoint."""
    exp_dir = Path(exp_dir)
    dev = resolve_device(device)
    lm = load_model(exp_dir, dev)
    c = lm.config.data
    val = read_dataset(resolve_path(c.val_path, exp_dir), check_features=True) if c.val_path else []
    return validate_model(lm.model, lm.config, exp_dir, val, dev)


def train(
    exp_dir: str | Path,
    *,
    config: Config | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
    init_from=None,
    max_epochs: int | None = None,
    verbose: bool = True,
    first_eval: bool = False,
) -> TrainResult:
    """Train (or resume training) the model of an experiment folder.

    Parameters
    ----------
    exp_dir : path
        Holds ``config/hparams.yaml`` unless ``config`` is given (then it is written there).
    overrides : list of str
        ``section.key=value`` overrides of the config.
    device : str, optional
        "auto" (cuda, mps, cpu), "cpu", "cuda", ...; default from the config.
    init_from : path, optional
        A checkpoint whose weights start the run (fine-tuning).
    max_epochs : int, optional
        Stop after this many epochs in total (default: the config's); the learning-rate
        schedule still spans ``optim.max_epochs``.
    first_eval : bool
        Validate the starting weights before training (the original's ``--first_eval``).
    """
    exp_dir = Path(exp_dir)
    cfg_path = exp_dir / "config" / "hparams.yaml"
    if config is None:
        config = load_config(cfg_path, overrides)
    elif overrides:
        config = load_config(to_dict(config), overrides)
    rank = dist_info()[0]
    if rank == 0 and not cfg_path.is_file():
        save_yaml(config, cfg_path)
    dev = resolve_device(device or config.optim.device)
    trainer = Trainer(exp_dir, config, dev, init_from=init_from, verbose=verbose)
    if rank == 0:
        save_yaml(config, exp_dir / "config" / "resolved.yaml")
    try:
        result = trainer.run(max_epochs, first_eval=first_eval)
    except BaseException:
        teardown_distributed(finished=False)
        raise
    teardown_distributed(finished=True)
    return result


def coarse_to_fine(
    exp_dir: str | Path,
    *,
    coarse_epochs: int,
    fine_epochs: int,
    fine_lr_scale: float = 0.5,
    align_cfg=None,
    device: str | None = None,
    overrides: list[str] | None = None,
    verbose: bool = True,
) -> TrainResult:
    """Coarse training, chunk alignment with the coarse model, then fine training on aligned
    chunks starting from the coarse weights.

    ``EXP_DIR/config/hparams.yaml`` is the base config. Writes ``EXP_DIR/coarse/``,
    ``EXP_DIR/alignment.jsonl`` and ``EXP_DIR/fine/``; each stage resumes or is skipped
    when already done. Returns the fine stage's result.
    """
    from .align import run_alignment

    exp_dir = Path(exp_dir)
    base = to_dict(load_config(exp_dir / "config" / "hparams.yaml", overrides))
    for key in ("train_path", "val_path"):  # the stages live one folder down
        if base["data"][key]:
            base["data"][key] = str(resolve_path(base["data"][key], exp_dir).resolve())
    coarse_dir, fine_dir = exp_dir / "coarse", exp_dir / "fine"
    coarse_cfg = load_config(base, [f"optim.max_epochs={coarse_epochs}"])
    coarse = train(coarse_dir, config=coarse_cfg, device=device, verbose=verbose)
    align_file = exp_dir / "alignment.jsonl"
    stamp = exp_dir / "alignment.source"
    # what the alignment depends on, by content: a retrained coarse model at the same
    # path, another training list or other alignment settings all redo it
    source = json.dumps(
        {
            "coarse_sha256": sha256_file(coarse.best_checkpoint),
            "train_list_sha256": sha256_file(base["data"]["train_path"]),
            "align": repr(align_cfg),
        },
        sort_keys=True,
    )
    if not align_file.is_file() or not stamp.is_file() or stamp.read_text() != source:
        run_alignment(
            coarse.best_checkpoint,
            base["data"]["train_path"],
            align_file,
            cfg=align_cfg,
            device=device,
            verbose=verbose,
        )
        atomic_write_text(stamp, source)
    o = base["optim"]
    fine_cfg = load_config(
        base,
        [
            f"optim.max_epochs={fine_epochs}",
            f"data.align_path='{align_file.resolve()}'",
            f"optim.learning_rate={o['learning_rate'] * fine_lr_scale}",
            f"optim.warmup_steps={min(o['warmup_steps'], 20)}",
        ],
    )
    return train(fine_dir, config=fine_cfg, device=device, init_from=coarse.best_checkpoint, verbose=verbose)


__all__ = ["train", "evaluate_experiment", "coarse_to_fine"]
