"""The CoverHunter network: input BatchNorm -> conv subsampling -> Conformer -> attentive stats pooling.

Shapes use B = batch, T = pooled CQT frames, F = CQT bins, T' = tokens after the 4x
subsampling, D = model width.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig


class ConvSubsample(nn.Module):
    """Two 3x3 stride-2 convolutions over (time, bins), then a linear projection.

    (B, T, F) -> (B, T', D) with T' = ((T - 1) // 2 - 1) // 2 and the bins folded into
    the channels (channel-major: input index = channel * F' + bin).
    """

    def __init__(self, n_bins: int, d_model: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, d_model, 3, stride=2)
        self.conv2 = nn.Conv2d(d_model, d_model, 3, stride=2)
        f_out = ((n_bins - 1) // 2 - 1) // 2
        self.proj = nn.Linear(d_model * f_out, d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x.unsqueeze(1)))))  # (B, D, T', F')
        b, c, t, f = x.shape
        return self.proj(x.transpose(1, 2).reshape(b, t, c * f))


CHROMA_BINS = 12
CHROMA_FLOOR_DB = -60.0


def fold_chroma(x: Tensor, bins_per_octave: int = CHROMA_BINS) -> Tensor:
    """Fold a dB CQT into pitch classes: (B, T, F) -> (B, T, bins_per_octave).

    Powers of the same pitch class are summed over the whole octaves of the input, the
    result goes back to dB, and each frame is shifted so its strongest class is at 0 dB
    (floored at ``CHROMA_FLOOR_DB``): loudness, octave and voicing no longer matter.
    """
    b, t, f = x.shape
    n_oct = f // bins_per_octave
    if n_oct < 1:
        raise ValueError(f"a chroma front end needs at least {bins_per_octave} bins, got {f}")
    power = torch.pow(10.0, x[..., : n_oct * bins_per_octave] / 10.0)
    chroma = 10.0 * torch.log10(power.reshape(b, t, n_oct, bins_per_octave).sum(2) + 1e-10)
    return (chroma - chroma.amax(-1, keepdim=True)).clamp(min=CHROMA_FLOOR_DB)


FIFTH = 7  # semitones; 7 * 7 = 49 = 1 (mod 12), so a step of fifths undoes itself


def canonical_key(x: Tensor, bins: int = CHROMA_BINS) -> Tensor:
    """Rotate each chunk of stacked chroma views to its own key: (B, T, V * 12) -> same.

    The chunk's pitch-class profile p (summed over frames and views) is placed on the
    circle of fifths, c = sum_k p_k exp(2 pi i 7 k / 12), and every view is rotated by
    -7 * round(12 arg(c) / 2 pi) classes. Transposing the chunk by s classes turns
    arg(c) by 7 s steps, so the output is the same for all 12 transpositions: a cover in
    another key gives the same input, and the network spends nothing on learning that.
    A chunk whose phase lies half-way between two steps may land either side (the
    key-shift augmentation still shows the network such cases).

    Parameters
    ----------
    x : Tensor, shape (B, T, V * 12)
        Stacked chroma views, non-negative.

    Returns
    -------
    Tensor, shape (B, T, V * 12)
        Each item's views rotated by the same number of pitch classes.
    """
    b, t, f = x.shape
    v = x.reshape(b, t, f // bins, bins)
    k = torch.arange(bins, device=x.device, dtype=x.dtype)
    prof = v.sum((1, 2))  # (B, 12)
    angle = torch.atan2(
        (prof * torch.sin(2 * math.pi * FIFTH * k / bins)).sum(1),
        (prof * torch.cos(2 * math.pi * FIFTH * k / bins)).sum(1),
    )
    step = torch.round(angle * bins / (2 * math.pi)).long() % bins
    shift = (-step * FIFTH) % bins  # classes to rotate up by
    idx = (torch.arange(bins, device=x.device)[None, :] - shift[:, None]) % bins  # (B, 12)
    return torch.gather(v, 3, idx[:, None, None, :].expand_as(v)).reshape(b, t, f)


def wrap_bins(x: Tensor, extra: int = 3) -> Tensor:
    """Append the first ``extra`` pitch classes after the last, (B, T, C) -> (B, T, C + extra),
    so the valid convolutions of the subsampling see the circle of pitch classes."""
    return torch.cat([x, x[..., :extra]], dim=-1)


class PitchCircleConv(nn.Module):
    """Two 3x3 convolutions over (time, pitch class) of stacked chroma views, then a
    linear projection: (B, T, V * 12) -> (B, T, D), no subsampling in time.

    The pitch axis is padded circularly (B follows C), so a transposition of the input is
    a rotation of the feature maps, not a different picture; time is zero-padded. Chroma
    frames are already 0.4 s long, so the tokens stay at the input's frame rate (a 4x
    subsampling would leave 6 tokens of a 10 s passage).
    """

    def __init__(self, n_views: int, d_model: int):
        super().__init__()
        self.n_views = n_views
        c = max(8, d_model // 4)
        self.conv1 = nn.Conv2d(n_views, c, 3)
        self.conv2 = nn.Conv2d(c, c, 3)
        self.proj = nn.Linear(c * CHROMA_BINS, d_model)

    @staticmethod
    def _pad(x: Tensor) -> Tensor:  # (B, C, T, 12) -> (B, C, T + 2, 14)
        return F.pad(F.pad(x, (1, 1, 0, 0), mode="circular"), (0, 0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, t, f = x.shape
        x = x.view(b, t, self.n_views, CHROMA_BINS).transpose(1, 2)  # (B, V, T, 12)
        x = F.relu(self.conv1(self._pad(x)))
        x = F.relu(self.conv2(self._pad(x)))  # (B, C, T, 12)
        return self.proj(x.transpose(1, 2).reshape(b, t, -1))


def sinusoid_table(length: int, d_model: int) -> Tensor:
    """The standard (sin, cos) position table, (length, d_model), float32."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)
    return table


class RelPosSelfAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL position terms (WeNet style, no shift).

    score = ((q + u) k^T + (q + v) (W_pos p)^T) / sqrt(d_head)
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.h, self.dk = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(n_heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.empty(n_heads, self.dk))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.dk)
        k = self.k(x).view(b, t, self.h, self.dk).transpose(1, 2)  # (B, h, T', dk)
        v = self.v(x).view(b, t, self.h, self.dk).transpose(1, 2)
        p = self.pos(pos).view(1, t, self.h, self.dk).transpose(1, 2)  # (1, h, T', dk)
        ac = (q + self.pos_bias_u).transpose(1, 2) @ k.transpose(-2, -1)
        bd = (q + self.pos_bias_v).transpose(1, 2) @ p.transpose(-2, -1)
        attn = torch.softmax((ac + bd) / math.sqrt(self.dk), dim=-1)  # (B, h, T', T')
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.drop(F.silu(self.w1(x))))


class ConvModule(nn.Module):
    """Pointwise conv + GLU -> depthwise conv -> BatchNorm -> SiLU -> pointwise conv."""

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.norm = nn.BatchNorm1d(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, T', D)
        x = F.glu(self.pw1(x.transpose(1, 2)), dim=1)
        return self.pw2(F.silu(self.norm(self.dw(x)))).transpose(1, 2)


class ConformerBlock(nn.Module):
    """Macaron FFN/2 -> self-attention -> convolution -> FFN/2 -> LayerNorm, all pre-norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.attn = RelPosSelfAttention(d, cfg.n_heads)
        self.conv = ConvModule(d, cfg.conv_kernel)
        self.ff2 = FeedForward(d, cfg.ffn_dim, cfg.dropout)
        self.norm_ff1, self.norm_attn, self.norm_conv, self.norm_ff2, self.norm_out = (
            nn.LayerNorm(d, eps=1e-5) for _ in range(5)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = x + 0.5 * self.drop(self.ff1(self.norm_ff1(x)))
        x = x + self.drop(self.attn(self.norm_attn(x), pos))
        x = x + self.drop(self.conv(self.norm_conv(x)))
        x = x + 0.5 * self.drop(self.ff2(self.norm_ff2(x)))
        return self.norm_out(x)


class AttentiveStatsPool(nn.Module):
    """Channel-wise attentive statistics pooling (ECAPA style), (B, D, T') -> (B, E).

    Attention logits come from [x; mean; std] per frame, a softmax over time runs
    separately for every channel, and the weighted mean and std are projected to E.
    """

    def __init__(self, d_model: int, embed_dim: int):
        super().__init__()
        self.attn_in = nn.Linear(3 * d_model, d_model)
        self.attn_out = nn.Conv1d(d_model, d_model, 1)
        self.proj = nn.Linear(2 * d_model, embed_dim, bias=False)
        for m in (self.attn_in, self.attn_out):
            nn.init.xavier_uniform_(m.weight)

    @staticmethod
    def _stats(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        mean = (w * x).sum(-1)
        std = torch.sqrt(((w * (x - mean.unsqueeze(-1)) ** 2).sum(-1)).clamp(min=1e-12))
        return mean, std

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[-1]
        mean, std = self._stats(x, torch.full_like(x, 1.0 / t))
        ctx = torch.cat([x, mean.unsqueeze(-1).expand_as(x), std.unsqueeze(-1).expand_as(x)], 1)
        logits = self.attn_out(torch.tanh(self.attn_in(ctx.transpose(1, 2))).transpose(1, 2))
        mean, std = self._stats(x, torch.softmax(logits, dim=-1))
        return self.proj(torch.cat([mean, std], dim=1))


def input_bins(cfg: ModelConfig) -> int:
    """Columns of the network's input after any folding: the CQT's bins, 12 pitch
    classes, or 12 per fine chroma view."""
    if cfg.front_end == "fine_chroma":
        return CHROMA_BINS * len(cfg.chroma_views)
    return CHROMA_BINS if cfg.front_end == "chroma" else cfg.input_dim


class CoverHunter(nn.Module):
    """Chunks (B, T, F) -> embeddings (B, embed_dim), not L2-normalised.

    F is the CQT's bins in dB (front ends "cqt" and "chroma") or 12 per fine chroma view
    in [0, 1] ("fine_chroma", :mod:`coverhunter.inputs` says which file holds them).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.chroma = cfg.front_end == "chroma"
        self.fine_chroma = cfg.front_end == "fine_chroma"
        n_in = input_bins(cfg)
        self.input_norm = nn.BatchNorm1d(n_in)  # learned "global CMVN" over bins
        if self.fine_chroma:
            self.subsample = PitchCircleConv(len(cfg.chroma_views), cfg.d_model)
        else:
            self.subsample = ConvSubsample(n_in + 3 if self.chroma else n_in, cfg.d_model)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.pool = AttentiveStatsPool(cfg.d_model, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.register_buffer("pos_table", sinusoid_table(5000, cfg.d_model), persistent=False)

    @staticmethod
    def min_frames() -> int:
        """Shortest input (pooled frames) the subsampling accepts."""
        return 7

    def forward(self, x: Tensor) -> Tensor:
        if self.chroma:
            x = fold_chroma(x)
        if self.fine_chroma and self.cfg.chroma_key == "fifths":
            x = canonical_key(x)
        x = self.input_norm(x.transpose(1, 2)).transpose(1, 2)
        if self.chroma:
            x = wrap_bins(x)
        x = self.subsample(x) * math.sqrt(self.cfg.d_model)
        pos = self.drop(self.pos_table[: x.shape[1]].unsqueeze(0))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, pos)
        return self.pool(self.final_norm(x).transpose(1, 2))

    @torch.no_grad()
    def embed(self, x: Tensor, batch_size: int = 64) -> Tensor:
        """Eval-mode embeddings of (N, T, F) chunks, in batches; the caller sets eval()."""
        outs = [self(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return torch.cat(outs) if outs else x.new_zeros(0, self.cfg.embed_dim)


# ---------------------------------------------------------------------------
# the original's state_dict names

_BLOCK_KEYS = {
    "feed_forward_macaron.w_1": "ff1.w1",
    "feed_forward_macaron.w_2": "ff1.w2",
    "feed_forward.w_1": "ff2.w1",
    "feed_forward.w_2": "ff2.w2",
    "self_attn.linear_q": "attn.q",
    "self_attn.linear_k": "attn.k",
    "self_attn.linear_v": "attn.v",
    "self_attn.linear_out": "attn.out",
    "self_attn.linear_pos": "attn.pos",
    "self_attn.pos_bias_u": "attn.pos_bias_u",
    "self_attn.pos_bias_v": "attn.pos_bias_v",
    "conv_module.pointwise_conv1": "conv.pw1",
    "conv_module.depthwise_conv": "conv.dw",
    "conv_module.norm": "conv.norm",
    "conv_module.pointwise_conv2": "conv.pw2",
    "norm_ff_macaron": "norm_ff1",
    "norm_mha": "norm_attn",
    "norm_conv": "norm_conv",
    "norm_ff": "norm_ff2",
    "norm_final": "norm_out",
}
_TOP_KEYS = {
    "_global_cmvn": "input_norm",
    "_encoder.embed.conv.0": "subsample.conv1",
    "_encoder.embed.conv.2": "subsample.conv2",
    "_encoder.embed.out.0": "subsample.proj",
    "_encoder.after_norm": "final_norm",
    "_pool_layer._linear.linear_layer": "pool.attn_in",
    "_pool_layer._conv.conv": "pool.attn_out",
    "_pool_layer._final_layer": "pool.proj",
}
# the original's training heads, which live in our CoverLoss
_HEAD_KEYS = {"_bottleneck": "neck", "_ce_layer": "classifier", "_center_loss": "center"}


def _rename(key: str) -> tuple[str, str] | None:
    """Original key -> ("model" | "loss", our key); None for keys we do not use."""
    m = re.match(r"_encoder\.encoders\.(\d+)\.(.+)\.(\w+)$", key)
    if m:
        i, mod, leaf = m.groups()
        if mod in _BLOCK_KEYS:
            return "model", f"blocks.{i}.{_BLOCK_KEYS[mod]}.{leaf}"
        if f"{mod}.{leaf}" in _BLOCK_KEYS:  # pos_bias_u/v are parameters, not modules
            return "model", f"blocks.{i}.{_BLOCK_KEYS[f'{mod}.{leaf}']}"
    for table, part in ((_TOP_KEYS, "model"), (_HEAD_KEYS, "loss")):
        for old, new in table.items():
            if key.startswith(old + "."):
                return part, new + key[len(old) :]
    return None


def convert_original_state(state: dict) -> tuple[dict, dict]:
    """Split an original ``generator`` state_dict into (model state, loss-head state).

    Raises
    ------
    ValueError
        When a key of the original's embedding network is not recognised.
    """
    model, heads = {}, {}
    for key, value in state.items():
        target = _rename(key)
        if target is None:
            if key.startswith("_embed_lo"):
                continue  # created by the original only when widths differ, never used
            raise ValueError(f"unrecognised key in original checkpoint: {key}")
        (model if target[0] == "model" else heads)[target[1]] = value
    return model, heads


def model_config_from_original(state: dict, base: ModelConfig | None = None) -> ModelConfig:
    """Infer the sizes of an original checkpoint from its tensor shapes."""
    base = base or ModelConfig()
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"_encoder\.encoders\.(\d+)\.", k))}
    d = state["_encoder.after_norm.weight"].shape[0]
    kw = dict(
        input_dim=state["_global_cmvn.weight"].shape[0],
        d_model=d,
        n_layers=len(blocks),
        embed_dim=state["_pool_layer._final_layer.weight"].shape[0],
        ffn_dim=state["_encoder.encoders.0.feed_forward.w_1.weight"].shape[0],
        n_heads=state["_encoder.encoders.0.self_attn.pos_bias_u"].shape[0],
        conv_kernel=state["_encoder.encoders.0.conv_module.depthwise_conv.weight"].shape[-1],
    )
    if "_ce_layer.weight" in state:
        kw["n_classes"] = state["_ce_layer.weight"].shape[0]
    return ModelConfig(**{**base.__dict__, **kw})
