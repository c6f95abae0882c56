"""Training data: chunk requests, m-versions-per-work batches, CQT augmentation on the batch.

Randomness is explicit: the batch sampler draws every choice (works, tracks, chunk
length, tempo factor, crop seed) from a generator seeded by (seed, epoch), so a run is
repeatable whatever the number of loader workers, and a resumed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import DataConfig, SpecAugConfig
from .features import PAD_DB, pool_frames, stretch_frames

# one requested chunk: (track index, pooled frames, tempo rate, crop seed, centre frame);
# a negative centre means a random crop, otherwise the chunk is centred on that raw frame
Request = tuple[int, int, float, int, int]


class ChunkDataset(Dataset):
    """Random chunks of CQT files, read through a memory map (only the chunk is read).

    ``dataset[(i, n_frames, rate, seed, centre)]`` -> (float32 tensor (n_frames, n_bins), label).
    A tempo ``rate`` r reads r times as many raw frames and resamples them, which is a
    tempo change with the pitch unchanged.

    ``load`` (path -> array (frames, bins)) and ``pad_value`` serve other inputs than the
    CQT (:meth:`coverhunter.inputs.ModelInput.load`, e.g. the stored fine chroma).
    """

    def __init__(
        self,
        feat_paths: list[str],
        labels: list[int],
        mean_size: int = 3,
        load=None,
        pad_value: float = PAD_DB,
    ):
        if len(feat_paths) != len(labels):
            raise ValueError("one label per feature file is needed")
        self.paths, self.labels, self.mean_size = list(feat_paths), list(labels), mean_size
        self.load, self.pad_value = load, pad_value

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, req: Request):
        i, n_frames, rate, seed, centre = req
        raw = n_frames * self.mean_size
        need = max(1, math.ceil(raw * rate))
        feat = np.load(self.paths[i], mmap_mode="r") if self.load is None else self.load(self.paths[i])
        start = 0
        if len(feat) > need:
            if centre >= 0:  # aligned chunk: centred on the matched passage
                start = int(np.clip(centre - need // 2, 0, len(feat) - need))
            else:
                start = int(np.random.default_rng(seed).integers(0, len(feat) - need + 1))
        x = np.asarray(feat[start : start + need], dtype=np.float32)
        if rate != 1.0 and len(x) > 1:
            x = stretch_frames(x, rate)
        x = x[:raw]
        if len(x) < raw:
            x = np.concatenate([x, np.full((raw - len(x), feat.shape[1]), self.pad_value, np.float32)])
        return torch.from_numpy(pool_frames(x, self.mean_size)), self.labels[i]


def collate(items):
    xs, ys = zip(*items)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


@dataclass
class WorkBatchSampler:
    """Batches of ``batch_size // m_per_class`` works with ``m_per_class`` tracks each.

    Works are drawn without replacement inside a batch; a work with fewer than m tracks
    repeats them. Under DDP every rank draws the same global batch of
    ``batch_size * world_size`` items and keeps its own slice of whole works.
    """

    labels: list[int]
    cfg: DataConfig
    seed: int
    epoch: int
    steps: int
    rank: int = 0
    world_size: int = 1
    # fine stage: track -> partner track -> [(centre frame in track, centre frame in partner)]
    alignment: dict[int, dict[int, list[tuple[int, int]]]] | None = None
    aligned_prob: float = 1.0

    def __post_init__(self):
        bs, m = self.cfg.batch_size, self.cfg.m_per_class
        if bs % m:
            raise ValueError(f"batch_size {bs} must be a multiple of m_per_class {m}")
        self.by_label: dict[int, list[int]] = {}
        for i, lab in enumerate(self.labels):
            self.by_label.setdefault(lab, []).append(i)
        need = bs * self.world_size // m
        if len(self.by_label) < need:
            raise ValueError(
                f"a batch needs {need} works but the training list has "
                f"{len(self.by_label)}; lower batch_size or raise m_per_class"
            )

    @staticmethod
    def default_steps(labels: list[int], cfg: DataConfig, world_size: int = 1) -> int:
        """One pass: every track (at least m per work) seen about once per epoch."""
        counts = np.bincount(labels)
        per_batch = cfg.batch_size * world_size
        return max(1, int(np.maximum(counts[counts > 0], cfg.m_per_class).sum()) // per_batch)

    def _aligned(self, idx: list[int], rng: np.random.Generator):
        """m chunks of one work that cover the same passage: an anchor chunk and its matches
        in the other versions (None when the work has no alignment, or by chance)."""
        if rng.random() >= self.aligned_prob:
            return None
        anchors = [i for i in idx if self.alignment.get(i)]
        if not anchors:
            return None
        a = int(rng.choice(anchors))
        partners = sorted(self.alignment[a])
        j0 = partners[int(rng.integers(len(partners)))]
        pairs = self.alignment[a][j0]
        centre_a, _ = pairs[int(rng.integers(len(pairs)))]
        picks = [(a, centre_a)]
        order = [partners[k] for k in rng.permutation(len(partners))]
        while len(picks) < self.cfg.m_per_class:
            for j in order:
                if len(picks) >= self.cfg.m_per_class:
                    break
                # the partner's chunk matched to the anchor's closest aligned chunk
                matches = self.alignment[a][j]
                best = min(matches, key=lambda p: abs(p[0] - centre_a))
                picks.append((j, best[1]))
        return picks

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        c, aug = self.cfg, self.cfg.spec_augment
        keys = sorted(self.by_label)
        n_works = c.batch_size * self.world_size // c.m_per_class
        lengths: list[int] = []
        for _ in range(self.steps):
            if not lengths:  # each chunk length once per round, in random order
                lengths = list(rng.permutation(c.chunk_frame))
            n_frames = int(lengths.pop())
            batch: list[Request] = []
            for lab in rng.choice(keys, size=n_works, replace=False):
                idx = self.by_label[int(lab)]
                picks = self._aligned(idx, rng) if self.alignment else None
                if picks is None:  # random crops of m tracks
                    chosen = rng.choice(idx, size=c.m_per_class, replace=len(idx) < c.m_per_class)
                    picks = [(int(i), -1) for i in chosen]
                for i, centre in picks:
                    rate = 1.0
                    if aug.stretch_prob > 0 and rng.random() < aug.stretch_prob:
                        rate = float(rng.uniform(1 - aug.stretch_range, 1 + aug.stretch_range))
                    batch.append((i, n_frames, rate, int(rng.integers(2**31)), centre))
            yield batch[self.rank * c.batch_size : (self.rank + 1) * c.batch_size]


def augment_batch(x: torch.Tensor, cfg: SpecAugConfig, gen: torch.Generator) -> torch.Tensor:
    """Pitch shift and random erasing on a batch of CQT chunks (B, T, F), in dB.

    * shift: with ``roll_prob``, move the content up or down by 1..``roll_max`` bins (a
      transposition); the bins it leaves are filled with the chunk's minimum, instead of
      the original's circular roll that wrapped the top octave onto the bass.
    * erase: with ``erase_prob``, ``erase_num`` rectangles of ``erase_time`` x
      ``erase_freq`` of the chunk, placed uniformly *inside* it (the original lost those
      whose start index went negative), filled with one value drawn from U(-80, 0).

    Random numbers come from ``gen`` (CPU), so results do not depend on the device.
    """
    b, t, f = x.shape
    x = x.clone()
    do_roll = torch.rand(b, generator=gen) < cfg.roll_prob
    shifts = torch.randint(1, max(2, cfg.roll_max + 1), (b,), generator=gen)
    shifts = shifts * (torch.randint(0, 2, (b,), generator=gen) * 2 - 1)
    do_erase = torch.rand(b, generator=gen) < cfg.erase_prob
    ht, hf = max(1, int(cfg.erase_time * t)), max(1, int(cfg.erase_freq * f))
    t0 = torch.randint(0, t - ht + 1, (b, cfg.erase_num), generator=gen)
    f0 = torch.randint(0, f - hf + 1, (b, cfg.erase_num), generator=gen)
    fill = torch.rand(b, generator=gen) * -80.0
    for i in range(b):
        if do_roll[i] and cfg.roll_max > 0:
            s = int(shifts[i])
            floor = x[i].min()
            x[i] = torch.roll(x[i], s, dims=1)
            if s > 0:
                x[i, :, :s] = floor
            else:
                x[i, :, s:] = floor
        if do_erase[i]:
            for k in range(cfg.erase_num):
                x[i, t0[i, k] : t0[i, k] + ht, f0[i, k] : f0[i, k] + hf] = fill[i]
    return x


def augment_chroma_batch(x: torch.Tensor, cfg: SpecAugConfig, gen: torch.Generator) -> torch.Tensor:
    """Key shift and random erasing on a batch of stacked chroma views (B, T, 12 k) in [0, 1].

    * key: with ``roll_prob``, every view of an item is rotated by the same number of
      pitch classes, uniform in 1..11 (a transposition; the pitch circle has no edge, so
      nothing is lost, unlike the CQT's shift). ``roll_max`` is not used: any key is
      as likely as any other for a cover.
    * erase: with ``erase_prob``, ``erase_num`` rectangles of ``erase_time`` of the chunk
      x ``erase_freq`` of its columns (at least one pitch class), set to 0 (silence).

    Random numbers come from ``gen`` (CPU), so results do not depend on the device.
    """
    b, t, f = x.shape
    if f % 12:
        raise ValueError(f"stacked chroma views have 12 columns each, got {f}")
    x = x.clone()
    do_roll = torch.rand(b, generator=gen) < cfg.roll_prob
    shifts = torch.randint(1, 12, (b,), generator=gen)
    do_erase = torch.rand(b, generator=gen) < cfg.erase_prob
    ht, hf = max(1, int(cfg.erase_time * t)), max(1, int(cfg.erase_freq * f))
    t0 = torch.randint(0, t - ht + 1, (b, cfg.erase_num), generator=gen)
    f0 = torch.randint(0, f - hf + 1, (b, cfg.erase_num), generator=gen)
    views = x.view(b, t, f // 12, 12)  # shares memory with x
    for i in range(b):
        if do_roll[i]:
            views[i] = torch.roll(views[i], int(shifts[i]), dims=-1)
        if do_erase[i]:
            for k in range(cfg.erase_num):
                x[i, t0[i, k] : t0[i, k] + ht, f0[i, k] : f0[i, k] + hf] = 0.0
    return x
