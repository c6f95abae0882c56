"""A training run's state in its checkpoints beyond the weights, and the checks of a resume.

``last.pt`` holds, besides the weights, loss heads and optimiser
(:func:`coverhunter.checkpoint.save_checkpoint`), the global RNG state (:func:`rng_state`)
and the trainer's bookkeeping (best value and epoch, epochs without improvement, history,
planned epochs, seconds trained). :func:`load_resume_state` reads it back for
:class:`coverhunter.trainer.Trainer` and refuses what would not resume exactly (a damaged
file, another file format, another learning-rate schedule, other works);
:func:`repair_best` restores a ``best.pt`` that an older version's kill left missing.

Imports ``checkpoint``, ``config``, ``utils``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .checkpoint import FORMAT, load_failure
from .config import Config, to_dict
from .utils import atomic_write_bytes

log = logging.getLogger(__name__)

# the settings of the learning-rate schedule: a resume under other values is refused
SCHEDULE = ("max_epochs", "steps_per_epoch", "learning_rate", "min_lr", "warmup_steps")


def rng_state() -> dict:
    """Global RNG state (dropout draws from it); every other draw is seeded per epoch."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_resume_state(last: Path, cfg: Config, works: list[str]) -> dict | None:
    """The checkpoint ``last`` to resume from, checked against the run's config and
    works; None when there is none. Raises ValueError for a damaged or foreign file, a
    changed schedule or other works."""
    if not last.is_file():
        return None
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for bad files
        raise ValueError(
            f"{last}: damaged checkpoint, cannot resume ({load_failure(e)}); restore it or "
            "remove it to train from the start"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{last}: not a coverhunter checkpoint")
    check_schedule(last, state.get("config", {}).get("optim", {}), cfg)
    if state.get("works") != works:
        raise ValueError(
            f"{last}: trained on other works than {cfg.data.train_path}; "
            "use a new EXP_DIR or remove the checkpoints"
        )
    return state


def check_schedule(last: Path, saved: dict, cfg: Config) -> None:
    """Refuse to resume under another learning-rate schedule (it would change silently)."""
    now = to_dict(cfg.optim)
    diff = [f"optim.{k}: {saved[k]} -> {now[k]}" for k in SCHEDULE if k in saved and saved[k] != now[k]]
    if diff:
        raise ValueError(
            f"{last}: the run was started with another schedule ({'; '.join(diff)}); "
            "resuming would silently change its cosine decay. Use the original "
            "values, or a new EXP_DIR with --init-from to continue from these weights"
        )


def repair_best(ckpt_dir: Path, best_epoch: int, saved_epoch: int) -> bool:
    """A kill between the two checkpoint writes of an older version left ``last.pt``
    (of epoch ``saved_epoch``) recording a best epoch whose ``best.pt`` is missing:
    restore it when ``last.pt`` is that epoch, else say so.

    Returns False when the recorded best no longer has its file, so that the next
    epoch's result is kept as ``best.pt``.
    """
    best = ckpt_dir / "best.pt"
    if best.is_file() or best_epoch < 0:
        return True
    if saved_epoch == best_epoch + 1:
        atomic_write_bytes(best, (ckpt_dir / "last.pt").read_bytes())
        log.warning("%s was missing; restored from last.pt (epoch %d, the best)", best, best_epoch)
        return True
    log.warning(
        "%s is missing and last.pt is not the best epoch (%d): the next improvement writes it",
        best,
        best_epoch,
    )
    return False


__all__ = ["SCHEDULE", "rng_state", "set_rng_state", "load_resume_state", "check_schedule", "repair_best"]
