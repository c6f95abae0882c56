"""The corpus synthesiser behind ``coverhunter make-corpus``: cover versions of music21
scores, arranged, performed and rendered to audio, with their exact alignment.

Modules, imports flowing down:

- :mod:`~coverhunter.corpus.make`: the corpus itself (works, splits, soundfonts, one
  version's plan, rendering, degradation, :func:`make_corpus`);
- :mod:`~coverhunter.corpus.arrange`: a version's arrangement of a score (melody kept,
  new accompaniment), no audio involved;
- :mod:`~coverhunter.corpus.align`: the exact chunk alignment between the versions of a
  rendered corpus, from their plans (``OUT_DIR/alignment.jsonl``).

Nothing of the inference side (index, identify, re-ranking, model, features, serving)
imports this package; only the commands that make a corpus do, when they run.

The names below are those of :mod:`coverhunter.corpus.make`, importable from here as
before this package existed (``from coverhunter.corpus import make_corpus``).
"""

from .make import (
    ALIGNMENT_FILE,
    CORPUS_VERSION,
    FOLDERS,
    FREEPATS_CFG,
    HARMONY_KEPT,
    MAX_SECONDS,
    MIN_SECONDS,
    RESERVED_FOLDERS,
    RESERVED_SOUNDFONTS,
    SAMPLE_RATE,
    SOUNDFONT_DIRS,
    SOUNDFONTS,
    TEST_SOUNDFONT,
    TEST_WORK_MODULUS,
    CorpusError,
    CorpusSpec,
    SkipPiece,
    candidate_pieces,
    check_tools,
    degrade,
    find_soundfonts,
    freepats_programs,
    harmony_subset,
    is_test_work,
    load_piece,
    make_corpus,
    make_demo_corpus,
    perform,
    piece_name,
    render,
    render_work,
)
from .plan import PLAY_TWICE_BELOW, VersionPlan, plan_version

__all__ = [
    "ALIGNMENT_FILE",
    "CORPUS_VERSION",
    "FOLDERS",
    "FREEPATS_CFG",
    "HARMONY_KEPT",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "PLAY_TWICE_BELOW",
    "RESERVED_FOLDERS",
    "RESERVED_SOUNDFONTS",
    "SAMPLE_RATE",
    "SOUNDFONT_DIRS",
    "SOUNDFONTS",
    "TEST_SOUNDFONT",
    "TEST_WORK_MODULUS",
    "CorpusError",
    "CorpusSpec",
    "SkipPiece",
    "VersionPlan",
    "candidate_pieces",
    "check_tools",
    "degrade",
    "find_soundfonts",
    "freepats_programs",
    "harmony_subset",
    "is_test_work",
    "load_piece",
    "make_corpus",
    "make_demo_corpus",
    "perform",
    "piece_name",
    "plan_version",
    "render",
    "render_work",
]
