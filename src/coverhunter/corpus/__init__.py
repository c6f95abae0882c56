"""The corpus synthesiser behind ``coverhunter make-corpus``: cover versions of music21
scores, arranged, performed and rendered to audio, with their exact alignment.

Modules, imports flowing down (each imports only modules below it):

- :mod:`~coverhunter.corpus.make`: the corpus itself (works and their split, each work's
  versions rendered in worker processes, resumably, ``dataset.txt``, :func:`make_corpus`);
- :mod:`~coverhunter.corpus.sound`: a version's sound: its parts performed, rendered by
  fluidsynth or timidity and degraded; the soundfonts and tools a corpus may use;
- :mod:`~coverhunter.corpus.arrange`: the parts of a version's arrangement (melody kept,
  new accompaniment), no audio involved;
- :mod:`~coverhunter.corpus.harmony`: the chords under a melody (a new harmonisation or
  the work's own) and their voicings;
- :mod:`~coverhunter.corpus.plan`: what one version does (its arrangement, performance
  and sound), drawn before a note is written;
- :mod:`~coverhunter.corpus.score`: what a score says: its melody, key and beats;
- :mod:`~coverhunter.corpus.align`: the exact chunk alignment between the versions of a
  rendered corpus, from their plans (``OUT_DIR/alignment.jsonl``).

Nothing of the inference side (index, identify, re-ranking, model, features, serving)
imports this package; only the commands that make a corpus do, when they run.

The names below are those :mod:`coverhunter.corpus.make` held before it was split
(now from :mod:`~coverhunter.corpus.make`, :mod:`~coverhunter.corpus.plan` and
:mod:`~coverhunter.corpus.sound`), importable from here as before this package existed
(``from coverhunter.corpus import make_corpus``).
"""

from .make import (
    ALIGNMENT_FILE,
    CORPUS_VERSION,
    FOLDERS,
    HARMONY_KEPT,
    MAX_SECONDS,
    MIN_SECONDS,
    RESERVED_FOLDERS,
    TEST_WORK_MODULUS,
    CorpusSpec,
    candidate_pieces,
    harmony_subset,
    is_test_work,
    load_piece,
    make_corpus,
    make_demo_corpus,
    piece_name,
    render_work,
)
from .plan import PLAY_TWICE_BELOW, VersionPlan, plan_version
from .sound import (
    FREEPATS_CFG,
    RESERVED_SOUNDFONTS,
    SAMPLE_RATE,
    SOUNDFONT_DIRS,
    SOUNDFONTS,
    TEST_SOUNDFONT,
    CorpusError,
    SkipPiece,
    check_tools,
    degrade,
    find_soundfonts,
    freepats_programs,
    perform,
    render,
)

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
