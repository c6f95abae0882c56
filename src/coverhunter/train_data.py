"""What a training run reads: its lists, its chunks and, for the fine stage, the alignment.

:func:`load_training_data` turns a config's ``data`` section into a :class:`TrainingData`:
the training list (labels are indices into its sorted works), the chunk dataset over the
model's input (the CQT, or the fine chroma stored beside it; a missing chroma file stops
here, not in a batch), the validation list, the alignment file as frames of the model's
input (:func:`read_aligned_frames`) and the steps an epoch takes; :func:`epoch_loader`
gives an epoch's batches on a rank.

Imports ``config``, ``data``, ``dataset``, ``inputs``, ``passages``, ``utils``; on first
use ``align``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from .config import Config
from .data import ChunkDataset, WorkBatchSampler, collate
from .dataset import Track, read_dataset
from .inputs import ModelInput, model_input
from .passages import PassageBatchSampler, PassageTables
from .utils import resolve_path

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """A training run's data, as :func:`load_training_data` reads it."""

    tracks: list[Track]  # the training list, in its order
    works: list[str]  # sorted: a label is an index into it
    labels: list[int]  # one per track
    input: ModelInput  # what the network reads (the CQT, or the fine chroma beside it)
    dataset: ChunkDataset
    val_tracks: list[Track]
    alignment: dict | None  # track index -> partner index -> [(frame, frame)] (fine stage)
    passage_tables: PassageTables | None  # loss.objective "passage" only
    steps_per_epoch: int


def _labelled(tracks: list[Track], works: list[str]) -> tuple[list[str], list[int]]:
    index = {w: i for i, w in enumerate(works)}
    return [t.feat for t in tracks], [index[t.work] for t in tracks]


def load_training_data(cfg: Config, exp_dir: Path, world: int) -> TrainingData:
    """The training and validation lists of ``cfg.data`` (paths relative to ``exp_dir``),
    for ``world`` ranks."""
    c = cfg.data
    train_path = resolve_path(c.train_path, exp_dir)
    inp = model_input(cfg)  # the CQT, or the fine chroma stored beside it (checked below)
    tracks = read_dataset(train_path, check_features=inp.reads_cqt)
    works = sorted({t.work for t in tracks})
    paths, labels = _labelled(tracks, works)
    sources = [inp.source(p) for p in paths]
    if not inp.reads_cqt:  # a missing chroma file stops here, not in a batch
        missing = [str(p) for p in sources if not Path(p).is_file()]
        if missing:
            raise ValueError(
                f"{train_path}: {len(missing)} recording(s) have no stored fine "
                f"chroma (e.g. {missing[0]}); run 'coverhunter extract' with "
                f"chroma_views {list(inp.views)}"
            )
        inp.load(sources[0])  # and the views are there
        if c.mean_size != 1:
            log.warning(
                "data.mean_size=%d averages %d chroma frames (0.4 s each) into one: "
                "chunk_frame counts those; a fine_chroma model usually wants 1",
                c.mean_size,
                c.mean_size,
            )
    dataset = ChunkDataset(sources, labels, c.mean_size, inp.loader(), inp.pad_value)
    val_tracks = (
        read_dataset(resolve_path(c.val_path, exp_dir), check_features=inp.reads_cqt) if c.val_path else []
    )
    if cfg.loss.objective == "passage" and not c.align_path:
        raise ValueError(
            "loss.objective 'passage' needs data.align_path (the alignment.jsonl "
            "that make-corpus writes, or one from 'coverhunter align')"
        )
    alignment = (
        read_aligned_frames(resolve_path(c.align_path, exp_dir), tracks, inp.frames_per_second, c.train_path)
        if c.align_path
        else None
    )
    tables = None
    if cfg.loss.objective == "passage":
        tables = PassageTables.build(labels, alignment)
        steps = PassageBatchSampler.default_steps(alignment, c, world)
    else:
        steps = WorkBatchSampler.default_steps(labels, c, world)
    steps_per_epoch = cfg.optim.steps_per_epoch or steps
    log.info(
        "train: %d tracks of %d works, %d steps/epoch; val: %d tracks",
        len(paths),
        len(works),
        steps_per_epoch,
        len(val_tracks),
    )
    return TrainingData(tracks, works, labels, inp, dataset, val_tracks, alignment, tables, steps_per_epoch)


def read_aligned_frames(path: Path, tracks: list[Track], fps: float, train_path) -> dict:
    """The alignment file ``path`` as track index (in ``tracks``) -> partner index ->
    [(centre, centre)] in frames of the model's input (``fps`` frames per second)."""
    from .align import read_alignment

    records = read_alignment(path)  # chunk centres, in seconds
    index = {t.track_id: i for i, t in enumerate(tracks)}  # dataset order
    out: dict[int, dict[int, list[tuple[int, int]]]] = {}
    for ui, partners in records.items():
        for uj, pairs in partners.items():
            if ui in index and uj in index and pairs:
                out.setdefault(index[ui], {})[index[uj]] = [
                    (round(a * fps), round(b * fps)) for a, b in pairs
                ]
    if not out:
        raise ValueError(f"{path}: no alignment between tracks of {train_path}")
    log.info("fine stage: aligned chunks for %d tracks from %s", len(out), path)
    return out


def epoch_loader(
    dataset: Dataset,
    labels: list[int],
    cfg: Config,
    epoch: int,
    steps: int,
    rank: int,
    world: int,
    *,
    alignment: dict | None,
    passage_tables: PassageTables | None,
    pin_memory: bool,
) -> DataLoader:
    """The batches of one epoch on one rank: ``steps`` batches of works
    (:class:`coverhunter.data.WorkBatchSampler`) or, for ``loss.objective`` "passage", of
    aligned passages (:class:`coverhunter.passages.PassageBatchSampler`), seeded by
    ``optim.seed`` and ``epoch`` so a resumed run sees the same batches."""
    if cfg.loss.objective == "passage":
        sampler = PassageBatchSampler(
            labels, alignment, cfg.data, cfg.optim.seed, epoch, steps, rank, world, passage_tables
        )
    else:
        sampler = WorkBatchSampler(
            labels,
            cfg.data,
            cfg.optim.seed,
            epoch,
            steps,
            rank,
            world,
            alignment=alignment,
            aligned_prob=cfg.data.aligned_prob,
        )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


__all__ = ["TrainingData", "load_training_data", "read_aligned_frames", "epoch_loader"]
