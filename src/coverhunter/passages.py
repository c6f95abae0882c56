"""Passage-contrastive training: the same music in another version, told apart from all else.

Work classification on random crops (the "classify" objective) pulls together two crops
of one work that usually play different passages; nothing in it rewards recognising the
*same passage* in another arrangement, which is what generalises to unseen works and
what the index's search (the best pair of chunks) relies on. Here a batch holds B works
and, for each, a passage of one version and the passage of another version that plays
the same music, known from an alignment file (``data.align_path``: the exact one that
``make-corpus`` writes, :mod:`coverhunter.corpus.align`, or one ``coverhunter align``
found). The batch is laid out in pairs::

    index   0    1    2    3   ...  2B-2  2B-1
    item    a0   b0   a1   b1  ...  a_B   b_B      (a_k, b_k: one passage, two versions)

and InfoNCE asks each passage to pick its partner among the 2B - 1 others and, with
``loss.queue_size``, the keys of past batches in a queue (a large effective batch on a
CPU, where large batches do not fit in a step; the keys come from a momentum copy of
the encoder, see :class:`PassageLoss`). Passages of the same work are never counted as
negatives.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DataConfig, LossConfig
from .data import Request
from .losses import LossOutput

log = logging.getLogger(__name__)

# track -> partner track -> [(centre frame in track, centre frame in partner), ...]
Alignment = dict[int, dict[int, list[tuple[int, int]]]]
MAX_TEMPO_RATIO = 2.0  # local tempo ratios beyond [1/2, 2] are taken for a jump, not a tempo
# neighbours (before, after) a local tempo ratio is measured over, widest first
_SPANS = ((2, 2), (1, 1), (2, 0), (0, 2), (1, 0), (0, 1))


def local_tempo_ratios(pairs: list[tuple[int, int]]) -> np.ndarray:
    """Local tempo ratio d t_partner / d t_track at each matched pair, (n,) float.

    Estimated from the neighbouring pairs (two on each side, one on each side, then the
    same on one side only) when they lie on one monotone stretch; 1 where all fail (a
    lone pair between jumps).
    """
    p = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    out = np.ones(len(p))
    for k in range(len(p)):
        for before, after in _SPANS:
            lo, hi = max(0, k - before), min(len(p) - 1, k + after)
            da, db = p[hi, 0] - p[lo, 0], p[hi, 1] - p[lo, 1]
            if da > 0 and 1 / MAX_TEMPO_RATIO <= db / da <= MAX_TEMPO_RATIO:
                out[k] = db / da
                break
    return out


def continuous_reach(pairs: list[tuple[int, int]]) -> np.ndarray:
    """How far the alignment runs on without a jump around each matched pair, (n, 2).

    Column 0: frames of the track before the pair, column 1: after it. From a pair, the
    run steps to a pair at the track's next matched moment whose partner time moved the
    same way at a plausible tempo ratio (a partner that repeats the passage has two pairs
    per moment: each run follows its own); it ends at a jump or where either version
    ends (the alignment has no pairs there), and goes on half a step beyond its last
    pair. A passage centred on a pair plays the same music in both versions only when
    it fits inside.
    """
    p = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    times = np.unique(p[:, 0])
    at = {t: np.flatnonzero(p[:, 0] == t) for t in times}
    gap = float(np.median(np.diff(times))) / 2 if len(times) > 1 else 0.0
    reach = np.zeros((len(p), 2))
    for col, order in ((0, range(len(times))), (1, range(len(times) - 1, -1, -1))):
        step = 1 if col == 1 else -1  # the neighbouring moment this column looks at
        for ti in order:
            if not 0 <= ti + step < len(times):
                continue
            da = abs(times[ti + step] - times[ti])
            nxt = at[times[ti + step]]
            for k in at[times[ti]]:
                ratio = (p[nxt, 1] - p[k, 1]) * step / da
                ok = (ratio >= 1 / MAX_TEMPO_RATIO) & (ratio <= MAX_TEMPO_RATIO)
                if ok.any():
                    best = nxt[ok][np.argmin(np.abs(np.log(ratio[ok])))]
                    reach[k, col] = da + reach[best, col]
    return reach + gap


@dataclass(frozen=True)
class PassageTables:
    """What the passage sampler draws from, computed once per run (a few seconds for
    tens of thousands of version pairs, too slow to redo every epoch).

    Attributes
    ----------
    anchors : dict of int to list of int
        Work -> its tracks that have at least one aligned partner.
    ratios, reach : dict of (track, partner) to np.ndarray
        :func:`local_tempo_ratios` (n,) and :func:`continuous_reach` (n, 2) of each
        pair of the alignment.
    """

    anchors: dict[int, list[int]]
    ratios: dict[tuple[int, int], np.ndarray]
    reach: dict[tuple[int, int], np.ndarray]

    @classmethod
    def build(cls, labels: list[int], alignment: Alignment) -> PassageTables:
        anchors: dict[int, list[int]] = {}
        ratios, reach = {}, {}
        for i, partners in alignment.items():
            if any(labels[j] == labels[i] and pairs for j, pairs in partners.items()):
                anchors.setdefault(labels[i], []).append(i)
            for j, pairs in partners.items():
                if pairs:
                    ratios[i, j] = local_tempo_ratios(pairs)
                    reach[i, j] = continuous_reach(pairs)
        return cls(anchors, ratios, reach)


@dataclass
class PassageBatchSampler:
    """Batches of ``batch_size // 2`` works, each as (passage of a, same passage of b).

    Every choice (works, version pair, matched moment, chunk length, tempo factors, crop
    seed) comes from a generator seeded by (seed, epoch), so resumed runs see the same
    batches. The partner is read at the local tempo ratio, so both passages cover the
    same music; then each gets its own random tempo factor (``spec_augment.stretch_*``),
    so the network still sees the pair at different tempi, as real versions are.

    Parameters
    ----------
    labels : list of int
        Work of each track (dataset order).
    alignment : Alignment
        Matched centres in input frames (the trainer converts the file's seconds).
    tables : PassageTables, optional
        Built from ``labels`` and ``alignment`` when not given (the trainer builds them
        once and hands them to every epoch's sampler).
    """

    labels: list[int]
    alignment: Alignment
    cfg: DataConfig
    seed: int
    epoch: int
    steps: int
    rank: int = 0
    world_size: int = 1
    tables: PassageTables | None = None

    def __post_init__(self):
        if self.cfg.batch_size % 2:
            raise ValueError(
                f"the passage objective needs an even data.batch_size, got {self.cfg.batch_size}"
            )
        if self.tables is None:
            self.tables = PassageTables.build(self.labels, self.alignment)
        self.works = sorted(self.tables.anchors)
        need = self.cfg.batch_size // 2 * self.world_size
        if len(self.works) < need:
            raise ValueError(
                f"a batch of {self.cfg.batch_size} passages needs {need} works with "
                f"aligned versions, the alignment has {len(self.works)}; lower "
                "data.batch_size or align more works"
            )

    @staticmethod
    def default_steps(alignment: Alignment, cfg: DataConfig, world_size: int = 1) -> int:
        """One pass: every aligned track an anchor about once per epoch."""
        return max(1, len(alignment) // (cfg.batch_size // 2 * world_size))

    def __len__(self) -> int:
        return self.steps

    def _pair(self, work: int, n_frames: int, rng: np.random.Generator) -> tuple[int, int, int, int, float]:
        """(a, b, centre in a, centre in b, tempo ratio b/a) of one matched moment, drawn
        among those whose passage of ``n_frames`` stays clear of jumps and ends (any
        moment when the pair has none)."""
        anchors = self.tables.anchors[work]
        a = anchors[int(rng.integers(len(anchors)))]
        partners = sorted(j for j, p in self.alignment[a].items() if p and self.labels[j] == work)
        b = partners[int(rng.integers(len(partners)))]
        clear = np.flatnonzero(self.tables.reach[a, b].min(axis=1) >= n_frames * self.cfg.mean_size / 2)
        k = (
            int(clear[rng.integers(len(clear))])
            if len(clear)
            else int(rng.integers(len(self.alignment[a][b])))
        )
        ca, cb = self.alignment[a][b][k]
        return a, b, int(ca), int(cb), float(self.tables.ratios[a, b][k])

    def _stretch(self, rng: np.random.Generator) -> float:
        aug = self.cfg.spec_augment
        if aug.stretch_prob > 0 and rng.random() < aug.stretch_prob:
            return float(rng.uniform(1 - aug.stretch_range, 1 + aug.stretch_range))
        return 1.0

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        c = self.cfg
        n_works = c.batch_size // 2 * self.world_size
        lengths: list[int] = []
        for _ in range(self.steps):
            if not lengths:  # each chunk length once per round, in random order
                lengths = list(rng.permutation(c.chunk_frame))
            n_frames = int(lengths.pop())
            batch: list[Request] = []
            for work in rng.choice(self.works, size=n_works, replace=False):
                a, b, ca, cb, ratio = self._pair(int(work), n_frames, rng)
                batch.append((a, n_frames, self._stretch(rng), int(rng.integers(2**31)), ca))
                batch.append((b, n_frames, ratio * self._stretch(rng), int(rng.integers(2**31)), cb))
            yield batch[self.rank * c.batch_size : (self.rank + 1) * c.batch_size]


def info_nce(
    z: Tensor,
    labels: Tensor,
    temperature: float,
    keys: Tensor | None = None,
    queue: Tensor | None = None,
    queue_labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """InfoNCE of passages laid out in pairs (2k, 2k + 1), with optional queued negatives.

    Parameters
    ----------
    z : Tensor, shape (2B, E)
        Embeddings (normalised here).
    labels : Tensor, shape (2B,), int64
        Work of each passage: other passages of the same work are not negatives.
    temperature : float
        Cosine similarities are divided by it.
    keys : Tensor, shape (2B, E), optional
        What each passage is compared with (a momentum encoder's embeddings of the same
        passages, normalised here); default ``z`` itself.
    queue : Tensor, shape (Q, E), optional
        L2-normalised keys of past batches, extra negatives.
    queue_labels : Tensor, shape (Q,), int64, optional
        Their works; -1 marks an empty slot.

    Returns
    -------
    loss : Tensor, scalar
        Mean over the 2B passages of -log softmax(similarities)[partner].
    top1 : Tensor, scalar
        Share of passages whose most similar passage of the batch is their partner (the
        queue left out, so that runs with and without one compare).
    """
    n = len(z)
    if n % 2 or n < 2:
        raise ValueError(f"passages come in pairs: expected an even batch, got {n}")
    z = F.normalize(z, dim=1)
    k = z if keys is None else F.normalize(keys, dim=1)
    idx = torch.arange(n, device=z.device)
    partner = idx ^ 1
    logits = z @ k.T / temperature  # (2B, 2B)
    not_neg = labels[:, None] == labels[None, :]  # self and the same work...
    not_neg[idx, partner] = False  # ...except the partner, the positive
    logits = logits.masked_fill(not_neg, float("-inf"))
    # among the batch only, so that runs with and without a queue compare
    top1 = (logits.argmax(1) == partner).float().mean()
    if queue is not None and len(queue):
        q_logits = z @ queue.T / temperature  # (2B, Q)
        skip = (queue_labels[None, :] == labels[:, None]) | (queue_labels[None, :] < 0)
        logits = torch.cat([logits, q_logits.masked_fill(skip, float("-inf"))], dim=1)
    return F.cross_entropy(logits, partner), top1


class PassageLoss(nn.Module):
    """InfoNCE over a pair-ordered batch, with a queue of past keys when ``queue_size`` > 0.

    Without a queue, each passage is compared with the other passages of its batch as the
    encoder embeds them. A queue of the encoder's own past embeddings does not work: the
    encoder lowers the loss by drifting away from its stale queue instead of telling
    passages apart (measured: in-batch top-1 fell from 0.12 to chance in 90 steps).
    So with a queue, as in MoCo (He et al. 2020), passages are compared with *keys*: the
    embeddings of a momentum copy of the encoder (weights an exponential moving average,
    ``loss.momentum``; eval mode), which drift slowly, and those keys are queued. The
    key encoder and the queue are part of this module's state, so checkpoints keep them
    and a resumed run continues exactly.

    ``forward(embeddings (2B, E), labels (2B,), x)`` returns a
    :class:`coverhunter.losses.LossOutput` whose ``extra`` holds ``nce`` and ``pair_top1``;
    ``x``, the encoder's input, is needed with a queue.
    """

    def __init__(self, cfg: LossConfig, embed_dim: int, encoder: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("queue", torch.zeros(cfg.queue_size, embed_dim))
        self.register_buffer("queue_labels", torch.full((cfg.queue_size,), -1, dtype=torch.int64))
        self.register_buffer("queue_next", torch.zeros((), dtype=torch.int64))
        self.key_encoder = None
        if cfg.queue_size:
            if encoder is None:
                raise ValueError("a passage queue needs the encoder (for its momentum copy)")
            self.key_encoder = copy.deepcopy(encoder).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PassageLoss:
        super().train(mode)
        if self.key_encoder is not None:
            self.key_encoder.eval()  # no dropout; BatchNorm statistics copied from the encoder
        return self

    @torch.no_grad()
    def update_keys(self, encoder: nn.Module) -> None:
        """After an optimiser step: key weights <- m * key weights + (1 - m) * encoder's."""
        if self.key_encoder is None:
            return
        m = self.cfg.momentum
        for pk, pe in zip(self.key_encoder.parameters(), encoder.parameters()):
            pk.mul_(m).add_(pe.detach(), alpha=1 - m)
        for bk, be in zip(self.key_encoder.buffers(), encoder.buffers()):
            bk.copy_(be)

    @torch.no_grad()
    def _enqueue(self, z: Tensor, labels: Tensor) -> None:
        size = len(self.queue)
        z, labels = z[-size:], labels[-size:]  # a batch larger than the queue keeps its end
        slots = (self.queue_next + torch.arange(len(z), device=z.device)) % size
        self.queue[slots] = F.normalize(z, dim=1).to(self.queue.dtype)
        self.queue_labels[slots] = labels
        self.queue_next.copy_((self.queue_next + len(z)) % size)

    def forward(self, embeddings: Tensor, labels: Tensor, x: Tensor | None = None) -> LossOutput:
        keys = None
        if self.key_encoder is not None:
            if x is None:
                raise ValueError("a passage queue needs the encoder's input x")
            with torch.no_grad():
                keys = self.key_encoder(x).float()
        # copies: the backward pass needs the queue as it was, and _enqueue overwrites it
        loss, top1 = info_nce(
            embeddings.float(),
            labels,
            self.cfg.temperature,
            keys,
            self.queue.clone(),
            self.queue_labels.clone(),
        )
        if self.training and keys is not None:
            self._enqueue(keys, labels)
        zero = embeddings.new_zeros(())
        return LossOutput(loss, 0.0, 0.0, 0.0, zero, extra={"nce": loss.item(), "pair_top1": top1.item()})


__all__ = [
    "Alignment",
    "PassageBatchSampler",
    "PassageTables",
    "PassageLoss",
    "info_nce",
    "local_tempo_ratios",
    "continuous_reach",
]
