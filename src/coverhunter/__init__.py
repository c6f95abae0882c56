"""coverhunter: cover song identification (CQT -> Conformer -> 128-d embeddings).

The public API::

    lm = load_model(path)                    # ours or the original's checkpoints
    emb, starts = embed_audio(lm, "a.mp3")   # unit chunk embeddings and their start times
    index = CatalogueIndex.load("cat/")
    results = identify(index, lm, ["a.mp3"])  # a QueryResult per recording

``identify`` is :func:`coverhunter.identification.identify_all`; one recording with the
options every surface (command line, service) uses::

    from coverhunter.identification import IdentifyOptions, identify
    result = identify(index, lm, "a.mp3", IdentifyOptions(top=5, segments=True))
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib

# The public names load their modules on first use (PEP 562), so ``import coverhunter`` and
# the training path need neither the audio stack (soundfile, soxr) nor faiss: a GPU machine
# that trains from features has only numpy, torch, pyyaml and tqdm.
_LAZY = {
    "LoadedModel": "checkpoint",
    "load_model": "checkpoint",
    "Config": "config",
    "load_config": "config",
    "Track": "dataset",
    "read_dataset": "dataset",
    "write_dataset": "dataset",
    "cqt": "features",
    "CatalogueIndex": "index",
    "Match": "index",
    "build_index": "index",
    "identify": "identification",  # identify_all, the list form (see the docstring)
    "IdentifyOptions": "config",  # also coverhunter.identification.IdentifyOptions
    "EvalReport": "metrics",
    "evaluate_distances": "metrics",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, "identify_all" if name == "identify" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def embed_audio(lm: LoadedModel, audio, device="cpu"):  # noqa: F821
    """Chunk embeddings of a recording (path, or Track with features) with ``lm``.

    Returns
    -------
    (np.ndarray (n_chunks, embed_dim), list of float)
        L2-normalised embeddings and each chunk's start in seconds.
    """
    from .evaluate import windowing
    from .index import embed_recording

    return embed_recording(lm, audio, windowing(lm.config), device)


__all__ = [
    "load_model",
    "embed_audio",
    "cqt",
    "Config",
    "load_config",
    "Track",
    "read_dataset",
    "write_dataset",
    "CatalogueIndex",
    "Match",
    "build_index",
    "identify",
    "IdentifyOptions",
    "EvalReport",
    "evaluate_distances",
    "LoadedModel",
    "__version__",
]
