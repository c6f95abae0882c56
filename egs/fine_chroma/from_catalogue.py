"""A larger training corpus for the fine-chroma arms, from the catalogue benchmark's
distractors: no rendering.

``benchmarks/bench_catalogue.py`` renders ~20,000 recordings of *training-split* works
(versions 4-8, half of them keeping the work's harmony, as ``make-corpus`` renders the
training corpus) and keeps, per chunk, the fine chroma views ``extract`` stores
(``chunk_NNNNN.cqt.npz``: float16 ``c3`` and ``c1``). This writes them as a dataset the
trainer reads (``model.front_end: fine_chroma`` reads only ``<id>.chroma.npz``):

    .venv/bin/python egs/fine_chroma/from_catalogue.py runs/bench_catalogue/distractors \\
        runs/fine_chroma/data runs/fine_chroma/big

- ``OUT/train.txt``: every distractor recording whose work is not a validation work of
  the reference data folder (``REF/val.txt``), plus ``REF/train.txt``;
- ``OUT/val.txt``: ``REF/val.txt`` (absolute feature paths), so that validation MAP is
  comparable with the arms trained on ``REF`` alone;
- ``OUT/cqt_feat/<id>.chroma.npz``: each distractor's views (no CQT: the fine-chroma
  front end never reads it; a CQT arm cannot train on this folder).

The distractors' works are training-split works, never the test works
(:func:`coverhunter.corpus.is_test_work`); the catalogue benchmark allows the model to have
trained on its distractors, never on its queries. Rerunning skips the files already written.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from coverhunter.chroma import chroma_path, save_chroma
from coverhunter.dataset import read_dataset
from coverhunter.utils import atomic_write_text

log = logging.getLogger("from_catalogue")
VIEWS = ("c3", "c1")


def chunk_files(folder: Path) -> list[tuple[Path, Path]]:
    """(search data, raw features) file pairs of every finished chunk, in order."""
    out = []
    for search in sorted(folder.glob("chunk_*.npz")):
        if search.name.endswith(".cqt.npz"):
            continue
        raw = search.with_suffix(".cqt.npz")
        if raw.is_file():
            out.append((search, raw))
    return out


def chunk_rows(search: Path, raw: Path, feat_dir: Path, skip_works: set[str]) -> list[dict]:
    """Write a chunk's recordings' chroma files (unless there) and return their dataset rows."""
    with np.load(search, allow_pickle=False) as z:
        ids, works, durs = z["track_ids"].astype(str), z["works"].astype(str), z["durations"]
    rows, views = [], None
    for i, (t, w, d) in enumerate(zip(ids, works, durs)):
        if w in skip_works:
            continue
        feat = feat_dir / f"{t}.cqt.npy"
        if not chroma_path(feat).is_file():
            if views is None:
                with np.load(raw, allow_pickle=False) as r:
                    if list(r["track_ids"].astype(str)) != list(ids):
                        raise ValueError(f"{raw}: its recordings differ from {search.name}'s")
                    views = {v: (r[v], r[f"{v}_offsets"]) for v in VIEWS}
            save_chroma(chroma_path(feat), {v: a[o[i] : o[i + 1]] for v, (a, o) in views.items()})
        rows.append(
            {"utt": t, "wav": f"{t}.wav", "dur_s": float(d), "song": w, "version": t, "feat": str(feat)}
        )
    return rows


def absolute(path: Path) -> list[dict]:
    """A dataset list's rows with absolute feature paths."""
    return [t.to_json() for t in read_dataset(path)]


def write_list(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("distractors", type=Path, help="bench_catalogue's distractors folder")
    ap.add_argument(
        "ref", type=Path, help="a data folder with train.txt and val.txt (its val works stay out)"
    )
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    val = absolute(a.ref / "val.txt")
    skip = {r["song"] for r in val}
    feat_dir = (a.out / "cqt_feat").resolve()
    feat_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for search, raw in tqdm(chunk_files(a.distractors), desc="chunks", unit="chunk"):
        rows += chunk_rows(search, raw, feat_dir, skip)
    if not rows:
        raise SystemExit(f"{a.distractors}: no finished chunk (chunk_NNNNN.npz with its .cqt.npz)")
    train = absolute(a.ref / "train.txt") + rows
    write_list(a.out / "train.txt", train)
    write_list(a.out / "val.txt", val)
    log.info(
        "%s: %d training recordings of %d works (%d from the distractors, none of the %d "
        "validation works); %d validation recordings",
        a.out,
        len(train),
        len({r["song"] for r in train}),
        len(rows),
        len(skip),
        len(val),
    )


if __name__ == "__main__":
    main()
