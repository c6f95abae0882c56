"""One training run: :class:`Trainer` builds the model, loss and optimiser, resumes, and
loops over epochs (optimiser steps, validation, early stopping, time budget, checkpoints).

Under torchrun every rank draws the same global batch and trains on its own slice; the
loss goes through DDP's forward (:class:`TrainModule`), so gradients are averaged across
ranks (the original bypassed DDP and never synchronised them). The run's data comes from
:mod:`coverhunter.train_data`, its checkpoint bookkeeping and resume checks from
:mod:`coverhunter.train_state`; :func:`coverhunter.train.train` builds and runs it.

Imports ``checkpoint``, ``config``, ``data``, ``evaluate``, ``losses``, ``model``,
``passages``, ``train_data``, ``train_state``, ``utils``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import load_model, save_checkpoint
from .config import Config
from .data import augment_batch, augment_chroma_batch
from .evaluate import validate_model
from .losses import CoverLoss
from .model import CoverHunter
from .passages import PassageLoss
from .train_data import epoch_loader, load_training_data
from .train_state import load_resume_state, repair_best, rng_state, set_rng_state
from .utils import atomic_write_text, remove_stale_tmp

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    exp_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    epochs_run: int
    steps: int
    best_metric: float | None
    monitor: str
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class TrainModule(torch.nn.Module):
    """Encoder + loss in one module, so DDP's forward (and its gradient hooks) run."""

    def __init__(self, model: CoverHunter, loss: CoverLoss | PassageLoss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        if isinstance(self.loss, PassageLoss):  # its momentum encoder embeds x too
            return self.loss(self.model(x), labels, x)
        return self.loss(self.model(x), labels)


def lr_at(step: int, cfg, total_steps: int) -> float:
    """Linear warm-up to ``learning_rate``, then cosine decay to ``min_lr`` at ``total_steps``."""
    o = cfg
    if o.warmup_steps > 0 and step < o.warmup_steps:  # 1) warm-up
        return o.learning_rate * (step + 1) / o.warmup_steps
    span = max(1, total_steps - o.warmup_steps)  # 2) cosine decay, then 3) floor
    progress = min(1.0, (step - o.warmup_steps) / span)
    return o.min_lr + 0.5 * (o.learning_rate - o.min_lr) * (1 + math.cos(math.pi * progress))


def dist_info() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; (0, 0, 1) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def setup_distributed(device: torch.device) -> None:
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    log.info("DDP: rank %d of %d, backend %s", dist.get_rank(), dist.get_world_size(), backend)


def teardown_distributed(finished: bool) -> None:
    """Leave the process group: all ranks together after a finished run (a rank that tears
    it down while another still talks to it can abort the process), at once after an error
    (the other ranks may never reach a barrier)."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def tensorboard_writer(log_dir: Path):
    """A TensorBoard writer into ``log_dir``, or None (with a warning) without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard not installed: no TensorBoard logs (pip install tensorboard)")
        return None
    return SummaryWriter(str(log_dir))


def log_epoch(row: dict, writer) -> None:
    """An epoch's row of the history in the log and, with a writer, in TensorBoard."""
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
    log.info("epoch %d: %s", row["epoch"], json.dumps(shown))
    if writer is not None:
        for k, v in row.items():
            if k not in ("epoch", "step") and isinstance(v, (int, float)):
                group = "map" if k.endswith("_map") else "epoch"
                writer.add_scalar(f"{group}/{k}", v, row["epoch"])
        writer.flush()


class Trainer:
    """One training run; ``run()`` loops over epochs. Built by :func:`coverhunter.train.train`."""

    def __init__(
        self, exp_dir: Path, cfg: Config, device: torch.device, init_from=None, verbose: bool = True
    ):
        self.exp_dir, self.cfg, self.verbose = exp_dir, cfg, verbose
        self.rank, self.local_rank, self.world = dist_info()
        if self.world > 1 and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.world > 1:
            setup_distributed(device)
        self.is_main = self.rank == 0
        torch.manual_seed(cfg.optim.seed)
        d = load_training_data(cfg, exp_dir, self.world)
        self.train_tracks, self.works, self.labels = d.tracks, d.works, d.labels
        self.input, self.dataset, self.val_tracks = d.input, d.dataset, d.val_tracks
        self.alignment, self.passage_tables = d.alignment, d.passage_tables
        self.steps_per_epoch = d.steps_per_epoch
        n_classes = cfg.model.n_classes or len(self.works)
        if n_classes < len(self.works):
            raise ValueError(f"model.n_classes={n_classes} but the training list has {len(self.works)} works")
        self.model = CoverHunter(cfg.model)
        self.passages = cfg.loss.objective == "passage"
        self.loss = (
            PassageLoss(cfg.loss, cfg.model.embed_dim, self.model)
            if self.passages
            else CoverLoss(cfg.loss, cfg.model.embed_dim, n_classes)
        )
        # the parts of the loss logged beside the total
        self.log_parts = ("nce", "pair_top1") if self.passages else ("ce", "triplet")
        self.augment = augment_batch if self.input.reads_cqt else augment_chroma_batch
        if init_from is not None:
            self._init_weights(init_from)
            if self.passages and self.loss.key_encoder is not None:  # keys start from these weights
                self.loss.key_encoder.load_state_dict(self.model.state_dict())
        self.model.to(device), self.loss.to(device)
        params = [p for p in list(self.model.parameters()) + list(self.loss.parameters()) if p.requires_grad]
        o = cfg.optim
        self.opt = torch.optim.AdamW(
            params, lr=o.learning_rate, betas=(o.adam_b1, o.adam_b2), weight_decay=o.weight_decay
        )
        self.step, self.epoch = 0, 0
        self.best, self.best_epoch, self.bad_epochs = None, -1, 0
        self.history: list[dict] = []
        # epochs the learning-rate schedule spans: optim.max_epochs, fewer under a time budget
        self.planned_epochs, self.train_seconds = o.max_epochs, 0.0
        self._slowest_epoch = 0.0  # seconds, this process's slowest epoch (time budget)
        self.ckpt_dir = exp_dir / "checkpoints"
        if self.is_main:  # leftovers of a killed run
            remove_stale_tmp(self.ckpt_dir), remove_stale_tmp(exp_dir)
        self._resume()
        module = TrainModule(self.model, self.loss)
        if self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            module = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
        self.module = module
        self.use_amp = bool(o.amp) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.writer = tensorboard_writer(exp_dir / "logs") if self.is_main else None

    # -- set-up ------------------------------------------------------------------------
    def _init_weights(self, path) -> None:
        lm = load_model(path)
        self.model.load_state_dict(lm.model.state_dict())
        heads = {
            k: v
            for k, v in lm.heads.items()
            if k in self.loss.state_dict() and v.shape == self.loss.state_dict()[k].shape
        }
        self.loss.load_state_dict(heads, strict=False)
        log.info("initialised from %s", lm.source)

    def _resume(self) -> None:
        last = self.ckpt_dir / "last.pt"
        state = load_resume_state(last, self.cfg, self.works)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.epoch = state["step"], state["epoch"]
        t = state.get("trainer", {})
        self.best, self.best_epoch = t.get("best"), t.get("best_epoch", -1)
        self.bad_epochs, self.history = t.get("bad_epochs", 0), t.get("history", [])
        self.planned_epochs = t.get("planned_epochs", self.planned_epochs)
        self.train_seconds = t.get("train_seconds", 0.0)
        if "rng" in state:
            set_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d, step %d", last, self.epoch, self.step)
        if not repair_best(self.ckpt_dir, self.best_epoch, state["epoch"]):
            self.best = None  # so that the next epoch's result is kept as best.pt

    # -- one epoch -----------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        return epoch_loader(
            self.dataset,
            self.labels,
            self.cfg,
            self.epoch,
            self.steps_per_epoch,
            self.rank,
            self.world,
            alignment=self.alignment,
            passage_tables=self.passage_tables,
            pin_memory=self.device.type == "cuda",
        )

    def train_step(self, shards: list[tuple[torch.Tensor, torch.Tensor, torch.Generator]]) -> dict:
        """One optimiser step on the mean loss of one or more (x, y, augmentation RNG) shards.

        Training passes one shard. Several shards give the gradient of their mean loss,
        which is what DDP computes from one shard per rank (tests use this equivalence).
        """
        o = self.cfg.optim
        lr = lr_at(self.step, o, self.planned_epochs * self.steps_per_epoch)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        logs = dict.fromkeys(("loss", *self.log_parts), 0.0)
        for x, y, gen in shards:
            x = self.augment(x, self.cfg.data.spec_augment, gen).to(self.device, non_blocking=True)
            y = y.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                out = self.module(x, y)
            self.scaler.scale(out.total / len(shards)).backward()
            parts = {"ce": out.ce, "triplet": out.triplet, **out.extra}
            for k in logs:
                logs[k] += (out.total.item() if k == "loss" else parts[k]) / len(shards)
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), o.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.passages:
            self.loss.update_keys(self.model)
        self.step += 1
        return {**logs, "lr": lr, "grad_norm": float(grad_norm)}

    def augment_rng(self, rank: int | None = None) -> torch.Generator:
        """The augmentation RNG of an epoch on a rank (seeded, so resumes are exact)."""
        r = self.rank if rank is None else rank
        return torch.Generator().manual_seed(self.cfg.optim.seed * 1000003 + self.epoch * 101 + r)

    def train_epoch(self) -> dict:
        self.module.train()
        gen = self.augment_rng()
        sums: dict[str, float] = {}
        n = 0
        bar = tqdm(
            self._loader(),
            total=self.steps_per_epoch,
            desc=f"epoch {self.epoch}",
            unit="step",
            disable=not (self.verbose and self.is_main),
            leave=False,
            mininterval=0.1 if sys.stderr.isatty() else 30.0,
        )  # quiet in log files
        for x, y in bar:
            logs = self.train_step([(x, y, gen)])
            n += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)  # drawn at the bar's own pace
            if self.writer is not None and self.step % 10 == 0:
                for k, v in logs.items():
                    self.writer.add_scalar(f"train/{k}", v, self.step)
        return {k: v / max(n, 1) for k, v in sums.items()}

    # -- validation --------------------------------------------------------------------
    def validate(self) -> dict:
        return validate_model(self.model, self.cfg, self.exp_dir, self.val_tracks, self.device)

    def monitor(self, row: dict) -> tuple[str, float]:
        """The value early stopping watches (larger is better)."""
        if "val_map" in row:
            return "val_map", row["val_map"]
        return "train_loss", -row["train_loss"]

    # -- loop ----------------------------------------------------------------------------
    def _save(self, name: str) -> Path:
        path = self.ckpt_dir / name
        save_checkpoint(
            path,
            config=self.cfg,
            model=self.model,
            loss=self.loss,
            optimizer=self.opt,
            step=self.step,
            epoch=self.epoch,
            works=self.works,
            extra={
                "rng": rng_state(),
                "trainer": {
                    "best": self.best,
                    "best_epoch": self.best_epoch,
                    "bad_epochs": self.bad_epochs,
                    "history": self.history,
                    "planned_epochs": self.planned_epochs,
                    "train_seconds": self.train_seconds,
                },
            },
        )
        return path

    def run(self, max_epochs: int | None = None, first_eval: bool = False) -> TrainResult:
        """Train until ``max_epochs`` (default: the config's) or early stopping.

        ``first_eval`` validates the current weights (initial or resumed) before training.
        """
        t0 = time.perf_counter()
        o = self.cfg.optim
        end = max_epochs if max_epochs is not None else o.max_epochs
        monitor_name = "val_map" if self.val_tracks else "train_loss"
        stop = o.patience > 0 and self.bad_epochs >= o.patience  # restored by a resume
        if stop and self.epoch < end:
            log.info(
                "this run stopped early at epoch %d (%s did not improve for %d epochs); "
                "nothing to do (raise optim.patience to train on)",
                self.epoch - 1,
                monitor_name,
                self.bad_epochs,
            )
        if first_eval and self.is_main:
            log.info(
                "first eval (epoch %d, before training): %s",
                self.epoch,
                json.dumps({k: round(v, 4) for k, v in self.validate().items()}),
            )
        clock = time.process_time if o.budget_clock == "cpu" else time.perf_counter
        while self.epoch < min(end, self.planned_epochs) and not stop:
            t_epoch = clock()
            train_logs = self.train_epoch()
            row = {"epoch": self.epoch, "step": self.step, **{f"train_{k}": v for k, v in train_logs.items()}}
            if self.is_main:
                row.update(self.validate())
                monitor_name, value = self.monitor(row)
                improved = self.best is None or value > self.best
                if improved:
                    self.best, self.best_epoch, self.bad_epochs = value, self.epoch, 0
                else:
                    self.bad_epochs += 1
                self.history.append(row)
                log_epoch(row, self.writer)
                self.epoch += 1
                self._fit_budget(clock() - t_epoch)
                # cumulative seconds (optim.budget_clock) of training and validation:
                # accuracy per CPU-hour
                row["train_seconds"] = round(self.train_seconds, 1)
                # best.pt before last.pt: a kill in between leaves last.pt one epoch behind,
                # so the resumed run repeats that epoch and writes best.pt again
                if improved:
                    self._save("best.pt")
                if (
                    (self.epoch % o.every_n_epoch_to_save == 0)
                    or improved
                    or self.epoch >= min(end, self.planned_epochs)
                ):
                    self._save("last.pt")
                atomic_write_text(self.exp_dir / "history.json", json.dumps(self.history, indent=1))
                stop = o.patience > 0 and self.bad_epochs >= o.patience
                if stop:
                    log.info("early stop: %s did not improve for %d epochs", monitor_name, o.patience)
            else:
                self.epoch += 1
            if self.world > 1:
                dev = self.device if self.device.type == "cuda" else "cpu"
                flag = torch.tensor([int(stop), self.planned_epochs], device=dev)
                dist.broadcast(flag, 0)
                stop, self.planned_epochs = bool(flag[0].item()), int(flag[1].item())
        if self.writer is not None:
            self.writer.close()
        best = self.ckpt_dir / "best.pt"
        last = self.ckpt_dir / "last.pt"
        return TrainResult(
            self.exp_dir,
            best if best.is_file() else None,
            last if last.is_file() else None,
            self.epoch,
            self.step,
            self.best,
            monitor_name,
            self.history,
            time.perf_counter() - t0,
        )

    def _fit_budget(self, epoch_seconds: float) -> None:
        """Count an epoch's time and, under ``optim.time_budget_s``, plan only the epochs
        that still fit (at the pace of the slowest epoch so far); the cosine decay then
        ends with the last of them."""
        self.train_seconds += epoch_seconds
        budget = self.cfg.optim.time_budget_s
        if budget <= 0:
            return
        self._slowest_epoch = max(self._slowest_epoch, epoch_seconds)
        fit = self.epoch + int(max(0.0, budget - self.train_seconds) // self._slowest_epoch)
        if fit < self.planned_epochs:
            log.info(
                "time budget %.0f s (%.0f s used, %.1f s per epoch): the schedule now "
                "ends after epoch %d instead of %d",
                budget,
                self.train_seconds,
                self._slowest_epoch,
                fit - 1,
                self.planned_epochs - 1,
            )
            self.planned_epochs = fit


__all__ = [
    "Trainer",
    "TrainResult",
    "TrainModule",
    "validate_model",
    "lr_at",
    "dist_info",
    "setup_distributed",
    "teardown_distributed",
]
