"""The training and extraction settings: frozen dataclasses, one per section of ``Config``
(stored in every checkpoint) and ``ExtractConfig`` (a data folder's ``hparams.yaml``).

Reading and writing them (YAML, the seed's flat format, overrides) is :mod:`.io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes a CQT (the original's fixed values are the defaults)."""

    # sample rate every recording is resampled to, in Hz
    sample_rate: int = 16000
    # CQT hop in samples: 640 samples = 40 ms = 25 frames per second
    hop_length: int = 640
    # lowest centre frequency, in Hz
    fmin: float = 32.0
    # number of CQT bins (8 octaves of 12 bins: 32 Hz .. 7.7 kHz)
    n_bins: int = 96
    bins_per_octave: int = 12
    # "float32" (default: stored as float32) or "float64" (bit-for-bit the original's dtype)
    precision: str = "float32"

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass(frozen=True)
class SplitConfig:
    """Train/validation/test split, made by work before any augmentation."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class ExtractConfig:
    """``DATA_DIR/hparams.yaml`` of the feature extractor."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    # tempo factors; 1.0 is the original recording and is always kept
    aug_speed_mode: tuple[float, ...] = (1.0,)
    # splits whose tracks get tempo copies (copies never leave their original's split)
    aug_splits: tuple[str, ...] = ("train",)
    # worker processes; 0 = one per CPU core
    num_workers: int = 0
    # fine chroma views written beside each CQT for a model (coverhunter.chroma.VIEWS); the
    # alignment's (coverhunter.chroma.CHROMA_SPEC) are written too (extract.stored_views)
    chroma_views: tuple[str, ...] = ("c3", "c1")
    # "fifths": a "fine_chroma" model rotates each chunk to its own key first (the phase
    # of its circle-of-fifths profile), so a transposed cover gives the same input;
    # "none": the network must learn key invariance from the key-shift augmentation
    chroma_key: str = "fifths"


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the CoverHunter network (defaults: the original's)."""

    # CQT bins of the input (front ends "cqt" and "chroma"; "fine_chroma" reads 12 per view)
    input_dim: int = 96
    embed_dim: int = 128
    # Conformer width, depth, heads, feed-forward width and depthwise kernel
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    ffn_dim: int = 256
    conv_kernel: int = 15
    dropout: float = 0.1
    # classifier rows; 0 = the number of works in the training data
    n_classes: int = 0
    # "cqt": the CQT bins as they are (the original); "chroma": fold the octaves into
    # 12 pitch classes inside the network (each frame's peak at 0 dB, floor -60 dB), which
    # makes the input independent of voicing and octave, as real covers change them;
    # "fine_chroma": not the CQT at all but the tuned 36-bin chroma that extract stores
    # beside it (coverhunter.chroma, 2.5 frames/s, views `chroma_views` side by side)
    front_end: str = "cqt"
    # the stored chroma views a "fine_chroma" model reads (coverhunter.chroma.VIEWS), in
    # this order: the input is (frames, 12 * len(chroma_views)); ignored by the others
    chroma_views: tuple[str, ...] = ("c3", "c1")
    # "fifths": a "fine_chroma" model rotates each chunk to its own key first (the phase
    # of its circle-of-fifths profile), so a transposed cover gives the same input;
    # "none": the network must learn key invariance from the key-shift augmentation
    chroma_key: str = "fifths"

    def __post_init__(self):
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"model.front_end must be one of {FRONT_ENDS}, got {self.front_end!r}")
        if self.front_end == "fine_chroma" and not self.chroma_views:
            raise ValueError("model.front_end 'fine_chroma' needs at least one of model.chroma_views")
        if self.chroma_key not in ("fifths", "none"):
            raise ValueError(f"model.chroma_key must be 'fifths' or 'none', got {self.chroma_key!r}")


FRONT_ENDS = ("cqt", "chroma", "fine_chroma")
OBJECTIVES = ("classify", "passage")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the focal, triplet and center losses."""

    ce_weight: float = 1.0
    focal_gamma: float = 2.0
    triplet_weight: float = 0.1
    triplet_margin: float = 0.3
    center_weight: float = 0.0
    # "classify": focal work classification + batch-hard triplet (the original, the
    # control); "passage": InfoNCE between a passage of one version and the passage of
    # another version that plays the same music (coverhunter.passages; needs
    # data.align_path), every other passage of the batch and of the queue a negative
    objective: str = "classify"
    # InfoNCE softmax temperature (cosine similarities are divided by it)
    temperature: float = 0.1
    # keys of past batches kept as extra negatives (0 = the batch only): a large
    # effective batch for about a third more time per step (the keys come from a
    # momentum copy of the encoder, coverhunter.passages.PassageLoss)
    queue_size: int = 0
    # the momentum copy's weights: m * its own + (1 - m) * the encoder's, every step
    momentum: float = 0.99

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"loss.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.temperature <= 0 or self.queue_size < 0 or not 0 <= self.momentum < 1:
            raise ValueError(
                f"loss.temperature must be > 0, loss.queue_size >= 0 and "
                f"loss.momentum in [0, 1), got {self.temperature}, "
                f"{self.queue_size}, {self.momentum}"
            )


@dataclass(frozen=True)
class SpecAugConfig:
    """Augmentation applied to CQT chunks during training."""

    # octave-free pitch roll: shift by a whole number of bins in [-roll_max, roll_max]
    roll_prob: float = 0.5
    roll_max: int = 12
    # rectangles filled with a random dB value
    erase_prob: float = 0.5
    erase_num: int = 4
    erase_time: float = 0.25
    erase_freq: float = 0.1
    # tempo stretch on the CQT: factor uniform in [1 - stretch_range, 1 + stretch_range]
    stretch_prob: float = 0.5
    stretch_range: float = 0.2


@dataclass(frozen=True)
class DataConfig:
    """Where the training lists are and how chunks are cut."""

    train_path: str = "train.txt"
    val_path: str = ""
    # chunk lengths in pooled frames (mean_size raw frames each); one batch uses one length
    chunk_frame: tuple[int, ...] = (1125, 900, 675)
    mean_size: int = 3
    batch_size: int = 16
    m_per_class: int = 8
    num_workers: int = 0
    spec_augment: SpecAugConfig = field(default_factory=SpecAugConfig)
    # fine stage of coarse-to-fine: an alignment file (coverhunter align) and the share
    # of works per batch drawn as aligned chunks (the rest are random crops)
    align_path: str = ""
    aligned_prob: float = 1.0


BUDGET_CLOCKS = ("wall", "cpu")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule and stopping."""

    learning_rate: float = 1e-3
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    weight_decay: float = 0.01
    warmup_steps: int = 100
    # cosine decay from learning_rate to min_lr over max_steps (after warm-up)
    min_lr: float = 1e-4
    max_epochs: int = 30
    # optimiser steps per epoch; 0 = one pass of the m-per-class sampler
    steps_per_epoch: int = 0
    grad_clip: float = 1.0
    # stop after this many epochs without improvement of the monitored value; 0 = never
    patience: int = 5
    seed: int = 1234
    # "auto", "cpu", "cuda", "cuda:1", "mps"
    device: str = "auto"
    amp: bool = False
    every_n_epoch_to_save: int = 1
    # budget of the training epochs in seconds, validation included (0 = none): after each
    # epoch the planned number of epochs shrinks to what still fits, and the cosine decay
    # follows, so a run on rented time ends annealed instead of cut off
    time_budget_s: float = 0.0
    # what the budget counts: "wall" (elapsed time: rented machines, GPUs) or "cpu" (this
    # process's CPU time: arms compared at equal CPU time stay comparable when other jobs
    # share the machine)
    budget_clock: str = "wall"

    def __post_init__(self):
        if self.budget_clock not in BUDGET_CLOCKS:
            raise ValueError(f"optim.budget_clock must be one of {BUDGET_CLOCKS}, got {self.budget_clock!r}")


@dataclass(frozen=True)
class EvalConfig:
    """How whole recordings become chunk embeddings and distances."""

    # window and hop, in seconds, of the chunks that cover a whole track (tail included)
    chunk_s: float = 135.0
    hop_s: float = 135.0
    # "min": min over chunk pairs of 1 - cos (the original's rule); "mean": pooled embedding
    distance: str = "min"
    batch_size: int = 32
    # test sets evaluated after each epoch: name -> {query_path, ref_path[, query_in_ref_path]}
    test_sets: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


@dataclass(frozen=True)
class Config:
    """Everything a training run needs; stored in every checkpoint."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
