"""Self-describing checkpoints, and loading models in this project's or the original's format."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import Config, from_dict, load_config, to_dict
from .model import CoverHunter, convert_original_state, model_config_from_original
from .utils import atomic_torch_save

log = logging.getLogger(__name__)

FORMAT = "coverhunter/1"


@dataclass
class LoadedModel:
    """A model ready for embedding, with what it was trained with."""

    model: CoverHunter
    config: Config
    works: list[str]  # classifier row -> work name (empty for original checkpoints)
    source: Path
    fingerprint: str  # content hash of the weights: keys embedding caches
    heads: dict  # BN-neck/classifier/centre state (for fine-tuning)
    # 2D Fourier summary projection fitted on the training data (coverhunter.classical),
    # used by the two-stage search; None when the file has none
    summary_projection: object = None


def save_checkpoint(
    path: Path,
    *,
    config: Config,
    model: torch.nn.Module,
    loss: torch.nn.Module,
    optimizer=None,
    step: int = 0,
    epoch: int = 0,
    works=(),
    extra=None,
) -> None:
    """Write a checkpoint that holds everything needed to rebuild, resume and use the model."""
    state = {
        "format": FORMAT,
        "config": to_dict(config),
        "model": model.state_dict(),
        "loss": loss.state_dict(),
        "step": step,
        "epoch": epoch,
        "works": list(works),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    state.update(extra or {})
    atomic_torch_save(state, Path(path))


def weights_fingerprint(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _latest_original(folder: Path) -> Path | None:
    files = [p for p in folder.glob("g_*") if re.fullmatch(r"g_\d+", p.name)]
    return max(files, key=lambda p: int(p.name[2:])) if files else None


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a file or a model folder (ours or the original's layout)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model file or folder")
    for cand in ("model.pt", "checkpoints/best.pt", "checkpoints/last.pt"):
        if (path / cand).is_file():
            if cand == "checkpoints/last.pt":
                log.warning(
                    "%s: no checkpoints/best.pt; using checkpoints/last.pt (the latest "
                    "epoch, not necessarily the best)",
                    path,
                )
            return path / cand
    for sub in ("pt_model", "checkpoints"):
        found = _latest_original(path / sub)
        if found is not None:
            return found
    raise FileNotFoundError(f"{path}: no checkpoint (model.pt, checkpoints/*.pt, pt_model/g_*)")


def load_failure(e: BaseException) -> str:
    """One line on why ``torch.load(..., weights_only=True)`` failed, without torch's advice
    to load the file unsafely (``weights_only=False`` runs any code the file holds)."""
    text = str(e).strip()
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        first = next((line.strip() for line in detail.splitlines() if line.strip()), "")
        first = first.split(". Please use", 1)[0].rstrip(".")
        return "it holds objects that a safe load refuses" + (f": {first}" if first else "")
    first = (text.splitlines() or [type(e).__name__])[0]
    return first.split(". ", 1)[0].rstrip(".")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model for inference, in eval mode on ``device``.

    Parameters
    ----------
    path : path
        A checkpoint of ours, a model folder of ours (``model.pt`` or
        ``checkpoints/{best,last}.pt``), or of the original (``pt_model/g_*`` or
        ``checkpoints/g_*`` beside ``config/hparams.yaml``).
    """
    ckpt = find_checkpoint(path)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for bad files
        raise ValueError(f"{ckpt}: damaged or not a checkpoint ({load_failure(e)})") from e
    if isinstance(state, dict) and state.get("format") == FORMAT:
        cfg = load_config(state["config"])
        model_state, heads, works = state["model"], state.get("loss", {}), state.get("works", [])
    elif isinstance(state, dict) and "generator" in state:
        orig = state["generator"]
        hp = ckpt.parent.parent / "config" / "hparams.yaml"
        cfg = load_config(hp) if hp.is_file() else Config()
        cfg = Config(**{**cfg.__dict__, "model": model_config_from_original(orig, cfg.model)})
        model_state, heads = convert_original_state(orig)
        works = []
    else:
        raise ValueError(f"{ckpt}: neither a coverhunter checkpoint nor an original g_* file")
    model = CoverHunter(cfg.model)
    model_state = {k: v.float() for k, v in model_state.items()}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as e:
        raise ValueError(f"{ckpt}: weights do not fit the model its config describes: {e}") from e
    model.eval().to(device)
    log.info("loaded %s", ckpt)
    proj = state.get("summary_projection") if isinstance(state, dict) else None
    if proj is not None:
        from .classical import SummaryProjection

        proj = SummaryProjection.from_state({k: v.numpy() for k, v in proj.items()})
    return LoadedModel(model, cfg, list(works), ckpt, weights_fingerprint(model_state), heads, proj)


def export_model(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """Write an inference-only copy (config + weights, float16 by default) of a checkpoint."""
    lm = load_model(src)
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in lm.model.state_dict().items()}
    state = {"format": FORMAT, "config": to_dict(lm.config), "model": sd, "works": lm.works}
    if lm.summary_projection is not None:
        state["summary_projection"] = _projection_state(lm.summary_projection)
    atomic_torch_save(state, Path(dst))
    return Path(dst)


def _projection_state(proj) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in proj.to_state().items()}


def attach_summary_projection(path: str | Path, proj) -> Path:
    """Store a fitted :class:`coverhunter.classical.SummaryProjection` in a model file
    (atomically); the weights and everything else are kept as they are."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a coverhunter model file")
    state["summary_projection"] = _projection_state(proj)
    atomic_torch_save(state, path)
    return path


__all__ = [
    "LoadedModel",
    "save_checkpoint",
    "load_model",
    "find_checkpoint",
    "export_model",
    "attach_summary_projection",
    "load_failure",
    "from_dict",
]
