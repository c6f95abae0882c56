"""Training: CPU, GPU or torchrun/DDP; exact resume; early stopping on validation MAP.

``train(exp_dir)`` reads ``EXP_DIR/config/hparams.yaml`` (ours or the original's) and
writes ``EXP_DIR/checkpoints/{last,best}.pt``, ``EXP_DIR/history.json`` and TensorBoard
scalars in ``EXP_DIR/logs``. Under torchrun every rank draws the same global batch and
trains on its own slice; the loss goes through DDP's forward, so gradients are averaged
across ranks (the original bypassed DDP and never synchronised them).
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

from .checkpoint import FORMAT, load_failure, save_checkpoint
from .config import Config, load_config, save_yaml, to_dict
from .data import ChunkDataset, WorkBatchSampler, augment_batch, augment_chroma_batch, collate
from .dataset import Track, read_dataset
from .evaluate import evaluate_tracks, read_query_in_ref
from .inputs import model_input
from .losses import CoverLoss
from .model import CoverHunter
from .passages import PassageBatchSampler, PassageLoss, PassageTables
from .utils import (
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_tmp,
    resolve_device,
    resolve_path,
    sha256_file,
)

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


def validate_model(model: CoverHunter, cfg: Config, exp_dir: Path, val_tracks: list[Track], device) -> dict:
    """Validation MAP (self-query on the val list) and the metrics of configured test sets."""
    out = {}
    if val_tracks and len({t.work for t in val_tracks}) > 1:
        report, _ = evaluate_tracks(model, val_tracks, None, cfg, device=device)
        out.update(val_map=report.map, val_mr1=report.mr1, val_hit_rate=report.hit_rate)
    for name, spec in cfg.eval.test_sets:
        spec = dict(spec)
        q = read_dataset(resolve_path(spec["query_path"], exp_dir), check_features=True)
        rp = spec.get("ref_path", spec["query_path"])
        same = rp == spec["query_path"]
        r = None if same else read_dataset(resolve_path(rp, exp_dir), check_features=True)
        pairs = (
            read_query_in_ref(resolve_path(spec["query_in_ref_path"], exp_dir))
            if spec.get("query_in_ref_path") and not same
            else None
        )
        report, _ = evaluate_tracks(model, q, r, cfg, device=device, query_in_ref=pairs)
        out.update(
            {
                f"{name}_map": report.map,
                f"{name}_mr1": report.mr1,
                f"{name}_hit_rate": report.hit_rate,
                f"{name}_top10": report.top10,
            }
        )
    return out


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


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _setup_distributed(device: torch.device) -> None:
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    log.info("DDP: rank %d of %d, backend %s", dist.get_rank(), dist.get_world_size(), backend)


def _labelled(tracks: list[Track], works: list[str]) -> tuple[list[str], list[int]]:
    index = {w: i for i, w in enumerate(works)}
    return [t.feat for t in tracks], [index[t.work] for t in tracks]


def _rng_state() -> dict:
    """Global RNG state (dropout draws from it); every other draw is seeded per epoch."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """One training run; ``run()`` loops over epochs. Built by :func:`train`."""

    def __init__(
        self, exp_dir: Path, cfg: Config, device: torch.device, init_from=None, verbose: bool = True
    ):
        self.exp_dir, self.cfg, self.verbose = exp_dir, cfg, verbose
        self.rank, self.local_rank, self.world = _dist_info()
        if self.world > 1 and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.world > 1:
            _setup_distributed(device)
        self.is_main = self.rank == 0
        torch.manual_seed(cfg.optim.seed)
        self._load_data()
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
        self.writer = self._writer()

    # -- set-up ------------------------------------------------------------------------
    def _load_data(self) -> None:
        c = self.cfg.data
        train_path = resolve_path(c.train_path, self.exp_dir)
        self.train_tracks = read_dataset(train_path, check_features=True)
        self.works = sorted({t.work for t in self.train_tracks})
        paths, labels = _labelled(self.train_tracks, self.works)
        self.input = model_input(self.cfg)  # the CQT, or the fine chroma stored beside it
        sources = [self.input.source(p) for p in paths]
        if not self.input.reads_cqt:  # a missing chroma file stops here, not in a batch
            missing = [str(p) for p in sources if not Path(p).is_file()]
            if missing:
                raise ValueError(
                    f"{train_path}: {len(missing)} recording(s) have no stored fine "
                    f"chroma (e.g. {missing[0]}); run 'coverhunter extract' with "
                    f"chroma_views {list(self.input.views)}"
                )
            self.input.load(sources[0])  # and the views are there
            if c.mean_size != 1:
                log.warning(
                    "data.mean_size=%d averages %d chroma frames (0.4 s each) into one: "
                    "chunk_frame counts those; a fine_chroma model usually wants 1",
                    c.mean_size,
                    c.mean_size,
                )
        self.dataset = ChunkDataset(sources, labels, c.mean_size, self.input.loader(), self.input.pad_value)
        self.labels = labels
        self.val_tracks = (
            read_dataset(resolve_path(c.val_path, self.exp_dir), check_features=True) if c.val_path else []
        )
        if self.cfg.loss.objective == "passage" and not c.align_path:
            raise ValueError(
                "loss.objective 'passage' needs data.align_path (the alignment.jsonl "
                "that make-corpus writes, or one from 'coverhunter align')"
            )
        self.alignment = self._load_alignment() if c.align_path else None
        if self.cfg.loss.objective == "passage":
            self.passage_tables = PassageTables.build(labels, self.alignment)
            steps = PassageBatchSampler.default_steps(self.alignment, c, self.world)
        else:
            steps = WorkBatchSampler.default_steps(labels, c, self.world)
        self.steps_per_epoch = self.cfg.optim.steps_per_epoch or steps
        log.info(
            "train: %d tracks of %d works, %d steps/epoch; val: %d tracks",
            len(paths),
            len(self.works),
            self.steps_per_epoch,
            len(self.val_tracks),
        )

    def _load_alignment(self) -> dict:
        """The alignment file as track index -> partner index -> [(centre, centre)] frames."""
        from .align import read_alignment

        path = resolve_path(self.cfg.data.align_path, self.exp_dir)
        records = read_alignment(path)  # chunk centres, in seconds
        index = {t.track_id: i for i, t in enumerate(self.train_tracks)}  # dataset order
        fps = self.input.frames_per_second  # centres in frames of the model's input
        out: dict[int, dict[int, list[tuple[int, int]]]] = {}
        for ui, partners in records.items():
            for uj, pairs in partners.items():
                if ui in index and uj in index and pairs:
                    out.setdefault(index[ui], {})[index[uj]] = [
                        (round(a * fps), round(b * fps)) for a, b in pairs
                    ]
        if not out:
            raise ValueError(f"{path}: no alignment between tracks of {self.cfg.data.train_path}")
        log.info("fine stage: aligned chunks for %d tracks from %s", len(out), path)
        return out

    def _init_weights(self, path) -> None:
        from .checkpoint import load_model

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
        if not last.is_file():
            return
        try:
            state = torch.load(last, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises several types for bad files
            raise ValueError(
                f"{last}: damaged checkpoint, cannot resume ({load_failure(e)}); restore it or "
                "remove it to train from the start"
            ) from e
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{last}: not a coverhunter checkpoint")
        self._check_schedule(last, state.get("config", {}).get("optim", {}))
        if state.get("works") != self.works:
            raise ValueError(
                f"{last}: trained on other works than {self.cfg.data.train_path}; "
                "use a new EXP_DIR or remove the checkpoints"
            )
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
            _set_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d, step %d", last, self.epoch, self.step)
        self._repair_best(state)

    _SCHEDULE = ("max_epochs", "steps_per_epoch", "learning_rate", "min_lr", "warmup_steps")

    def _check_schedule(self, last: Path, saved: dict) -> None:
        """Refuse to resume under another learning-rate schedule (it would change silently)."""
        now = to_dict(self.cfg.optim)
        diff = [
            f"optim.{k}: {saved[k]} -> {now[k]}" for k in self._SCHEDULE if k in saved and saved[k] != now[k]
        ]
        if diff:
            raise ValueError(
                f"{last}: the run was started with another schedule ({'; '.join(diff)}); "
                "resuming would silently change its cosine decay. Use the original "
                "values, or a new EXP_DIR with --init-from to continue from these weights"
            )

    def _repair_best(self, state: dict) -> None:
        """A kill between the two checkpoint writes of an older version left ``last.pt``
        recording a best epoch whose ``best.pt`` is missing: restore it when ``last.pt``
        is that epoch, else say so."""
        best = self.ckpt_dir / "best.pt"
        if best.is_file() or self.best_epoch < 0:
            return
        if state["epoch"] == self.best_epoch + 1:
            atomic_write_bytes(best, (self.ckpt_dir / "last.pt").read_bytes())
            log.warning("%s was missing; restored from last.pt (epoch %d, the best)", best, self.best_epoch)
        else:
            log.warning(
                "%s is missing and last.pt is not the best epoch (%d): the next improvement writes it",
                best,
                self.best_epoch,
            )
            self.best = None  # so that the next epoch's result is kept as best.pt

    def _writer(self):
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard not installed: no TensorBoard logs (pip install tensorboard)")
            return None
        return SummaryWriter(str(self.exp_dir / "logs"))

    # -- one epoch -----------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        if self.passages:
            sampler = PassageBatchSampler(
                self.labels,
                self.alignment,
                self.cfg.data,
                self.cfg.optim.seed,
                self.epoch,
                self.steps_per_epoch,
                self.rank,
                self.world,
                self.passage_tables,
            )
        else:
            sampler = WorkBatchSampler(
                self.labels,
                self.cfg.data,
                self.cfg.optim.seed,
                self.epoch,
                self.steps_per_epoch,
                self.rank,
                self.world,
                alignment=self.alignment,
                aligned_prob=self.cfg.data.aligned_prob,
            )
        nw = self.cfg.data.num_workers
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=nw,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
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
                "rng": _rng_state(),
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
                self._log_epoch(row)
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

    def _log_epoch(self, row: dict) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
        log.info("epoch %d: %s", row["epoch"], json.dumps(shown))
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)):
                    group = "map" if k.endswith("_map") else "epoch"
                    self.writer.add_scalar(f"{group}/{k}", v, row["epoch"])
            self.writer.flush()


def evaluate_experiment(exp_dir: str | Path, device: str | None = None) -> dict:
    """Validation and test-set metrics of an experiment's best (else last) checkpoint."""
    from .checkpoint import load_model

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
    rank = _dist_info()[0]
    if rank == 0 and not cfg_path.is_file():
        save_yaml(config, cfg_path)
    dev = resolve_device(device or config.optim.device)
    trainer = Trainer(exp_dir, config, dev, init_from=init_from, verbose=verbose)
    if rank == 0:
        save_yaml(config, exp_dir / "config" / "resolved.yaml")
    try:
        result = trainer.run(max_epochs, first_eval=first_eval)
    except BaseException:
        _teardown_distributed(finished=False)
        raise
    _teardown_distributed(finished=True)
    return result


def _teardown_distributed(finished: bool) -> None:
    """Leave the process group: all ranks together after a finished run (a rank that tears
    it down while another still talks to it can abort the process), at once after an error
    (the other ranks may never reach a barrier)."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


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
