"""The 2D Fourier summary's MAP on a test list, as a baseline for the arms' model alone:
raw, and projected by each given model file's summary projection.

    python egs/fine_chroma/summary_baseline.py runs/fine_chroma/test/full.txt \
        models/default/model.pt [MODEL ...]

Every recording a query against all others (self excluded), Euclidean distances between
the summaries of the alignment chroma (``alignment_inputs.global_summaries``, as the
two-stage search's first stage computes them).
"""

from __future__ import annotations

import sys

from coverhunter import classical as C
from coverhunter.alignment_inputs import alignment_features, global_summaries
from coverhunter.checkpoint import load_model
from coverhunter.dataset import read_dataset
from coverhunter.metrics import evaluate_distances, self_exclusion


def main() -> None:
    tracks = read_dataset(sys.argv[1], check_features=True)
    works = [t.work for t in tracks]
    align = [alignment_features(t.feat) for t in tracks]
    models = [(m, load_model(m).summary_projection) for m in sys.argv[2:]]
    print("| 2D Fourier summary | MAP |\n|---|---|")
    for name, proj in [("raw", None)] + models:
        if name != "raw" and proj is None:
            print(f"| projected by {name} | (no projection in the file) |")
            continue
        s = global_summaries(align, proj)
        rep = evaluate_distances(
            C.euclidean_distances(s, s), works, works, exclude=self_exclusion(len(works))
        )
        print(f"| {'raw' if proj is None else 'projected by ' + name} | {rep.map:.3f} |")


if __name__ == "__main__":
    main()
