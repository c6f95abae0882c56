"""Choosing the 2D Fourier summary projection: leave one sound out.

    .venv/bin/python benchmarks/bench_summary.py \
        [--train runs/corpus-v2/data-3000/train.txt] [--select runs/corpus-v2/val-extra/full.txt]

The two-stage search finds half its candidates by a projected 2D Fourier summary
(``coverhunter.classical.SummaryProjection``, fitted by ``coverhunter fit-summary``). Its
settings are chosen here, never on the benchmark's test corpus.

The test corpus is rendered with a soundfont no training corpus uses, so a setting is
judged the same way: for each sound (synthesizer and soundfont) of the training corpora,
the projection is fitted on the training recordings of every *other* sound, and scored
on the selection set's recordings of the held-out sound alone (works disjoint from the
training list; every recording a query against the others of that sound; MAP of the
summary alone). The table gives the mean over sounds and each sound's MAP. A projection
with too many axes learns the training sounds' timbre and loses on an unseen one; a
selection set of the training sounds would not show it.

The table in docs/accuracy.md ("Summary projection and fusion") came from
``runs/corpus-v2/data-3000`` (``coverhunter make-corpus runs/corpus-v2/data-3000 --works 3000
--versions 4-8 --seed 1``, then ``coverhunter extract``) and ``runs/corpus-v2/val-extra``,
300 further works rendered beside it (1,812 recordings, no work in common). Any other
training-split render serves as a selection set, e.g. ``make-corpus runs/select --works 400
--versions 4-8 --seed 2``: its works that are also in the training list are left out (and
counted).

Rows: the raw summary (no fit), PCA with whitening (``pca``), and the discriminant
(``lda``, ``pca_dims``/``dims``), at the patch lengths given (75 chroma frames = 30 s).
Summaries are cached under ``--out`` (default runs/bench_summary).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from coverhunter.alignment_inputs import alignment_features, summary_columns  # noqa: E402
from coverhunter.classical import CHROMA_PARAMS, SummaryProjection, euclidean_distances, multiscale_summary  # noqa: E402
from coverhunter.dataset import read_dataset  # noqa: E402
from coverhunter.metrics import evaluate_distances, self_exclusion  # noqa: E402
from coverhunter.utils import atomic_save_npy  # noqa: E402

log = logging.getLogger("bench_summary")
ALL_PATCHES = (75, 150, 300)
DEFAULT_ROWS = (
    "raw:75",
    "pca:75:20",
    "lda:75:100:20",
    "pca:75,300:20",
    "lda:75,300:100:20",
    "lda:75,300:100:30",
    "lda:75,300:150:30",
    "lda:75,300:200:50",
    "lda:75,300:300:50",
    "lda:75,300:450:80",
    "lda:75,150,300:100:30",
    "lda:300:100:30",
)


def sound_of(track) -> str:
    """The synthesizer and soundfont a rendered version used (from its ``version`` record)."""
    try:
        v = json.loads(track.version)
        return f"{v['renderer']}:{v.get('soundfont') or ''}"
    except (ValueError, KeyError, TypeError):
        return "unknown"


def _summary(feat) -> np.ndarray:
    return multiscale_summary(alignment_features(feat, CHROMA_PARAMS).chroma, ALL_PATCHES)


def summaries(list_path: Path, out: Path, workers: int):
    """(summaries (n, D) at ALL_PATCHES, works, sounds) of a list's recordings, cached."""
    tracks = [
        t for t in read_dataset(list_path, check_features=True) if t.feat and "source_utt" not in t.extra
    ]
    # the chroma's parameters are part of the key: summaries of another chroma are not reused
    key = hashlib.sha1(("\n".join(t.track_id for t in tracks) + f"\n{CHROMA_PARAMS}").encode()).hexdigest()[
        :12
    ]
    cache = out / f"{list_path.parent.name}-{list_path.stem}-{key}.npy"
    if cache.is_file():
        s = np.load(cache)
    else:
        from tqdm import tqdm

        with ProcessPoolExecutor(workers) as ex:
            s = np.stack(
                list(
                    tqdm(
                        ex.map(_summary, [t.feat for t in tracks], chunksize=32),
                        total=len(tracks),
                        desc=f"summaries of {list_path}",
                        unit="rec",
                        mininterval=5.0,
                    )
                )
            )
        out.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(cache, s)  # a killed run leaves no truncated cache
    return s, np.array([t.work for t in tracks]), np.array([sound_of(t) for t in tracks])


def parse_row(row: str):
    """ "lda:75,300:100:30" -> ("lda", (75, 300), 100, 30); "pca:75:20"; "raw:75"."""
    parts = row.split(":")
    method, patches = parts[0], tuple(int(p) for p in parts[1].split(","))
    nums = [int(x) for x in parts[2:]]
    if method not in ("raw", "pca", "lda") or len(nums) != {"raw": 0, "pca": 1, "lda": 2}[method]:
        raise SystemExit(f"bad row {row!r}: raw:PATCHES, pca:PATCHES:DIMS or lda:PATCHES:PCA_DIMS:DIMS")
    return method, patches, nums


def map_of(vectors: np.ndarray, works) -> float:
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    d = euclidean_distances(v, v)
    return evaluate_distances(d, works, works, exclude=self_exclusion(len(works))).map


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=Path("runs/corpus-v2/data-3000/train.txt"))
    ap.add_argument("--select", type=Path, default=Path("runs/corpus-v2/val-extra/full.txt"))
    ap.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_summary"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    st, wt, sdt = summaries(args.train, args.out, args.workers)
    sv, wv, sdv = summaries(args.select, args.out, args.workers)
    overlap = np.isin(wv, wt)
    if overlap.any():
        log.warning(
            "%s shares %d works with %s: their %d recordings are left out",
            args.select,
            len(set(wv[overlap])),
            args.train,
            int(overlap.sum()),
        )
        sv, wv, sdv = sv[~overlap], wv[~overlap], sdv[~overlap]
    # a held-out sound is scored where the selection set has two versions of a work in it
    sounds = sorted(
        snd for snd in set(sdt) & set(sdv) if np.unique(wv[sdv == snd], return_counts=True)[1].max() >= 2
    )
    if not sounds:
        raise SystemExit(
            f"{args.select}: no work outside {args.train} with two versions in one "
            "of its sounds; nothing to score"
        )
    print(
        f"\ntraining: {len(st)} recordings of {len(set(wt))} works; selection: {len(sv)} "
        f"recordings of {len(set(wv))} works; held-out sounds: {len(sounds)}\n"
    )
    print("| summary | fit | mean MAP, one sound held out | " + " | ".join(sounds) + " |")
    print("|---|---|---|" + "---|" * len(sounds))
    for row in args.rows:
        method, patches, nums = parse_row(row)
        cols = summary_columns(ALL_PATCHES, patches)
        if cols is None:
            raise SystemExit(f"bad row {row!r}: patches must be among {ALL_PATCHES}")
        maps = []
        for snd in sounds:
            keep, sel = sdt != snd, sdv == snd
            x = st[keep][:, cols]
            if method == "raw":
                proj = lambda s: s  # noqa: E731
            elif method == "pca":
                proj = SummaryProjection.fit(x, nums[0], patches)
            else:
                proj = SummaryProjection.fit_discriminant(x, wt[keep], nums[1], nums[0], patches)
            maps.append(map_of(proj(sv[sel][:, cols]), list(wv[sel])))
        fit = {
            "raw": "none",
            "pca": f"PCA {nums[0]} whitened" if nums else "",
            "lda": f"LDA {nums[1]} of PCA {nums[0]}" if len(nums) == 2 else "",
        }[method]
        print(
            f"| {','.join(map(str, patches))} | {fit} | {np.mean(maps):.4f} | "
            + " | ".join(f"{m:.3f}" for m in maps)
            + " |",
            flush=True,
        )


if __name__ == "__main__":
    main()
