#!/usr/bin/env bash
# Install everything coverhunter needs on a fresh Debian/Ubuntu machine; safe to re-run.
#   - Debian packages for the corpora (fluidsynth, timidity, soundfonts) when missing
#   - .venv with torch 2.13.0 (COVERHUNTER_TORCH_SPEC / TORCH_INDEX_URL choose the build, see
#     below) and the package with its extras
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
# more synthesizers and soundfonts for the arranged-cover corpus (training), and the
# held-out test soundfont sf_GMbank.sf2 (csound-soundfont) of benchmarks/bench_accuracy.py
[ -f /usr/share/sounds/sf3/FluidR3Mono_GM.sf3 ] || need+=(fluidr3mono-gm-soundfont)
[ -f /usr/share/sounds/sf2/OPL-3_FM_128M.sf2 ] || need+=(opl3-soundfont)
[ -f /usr/share/sounds/sf2/sf_GMbank.sf2 ] || need+=(csound-soundfont)
command -v timidity >/dev/null 2>&1 || need+=(timidity)
[ -f /etc/timidity/freepats.cfg ] || need+=(freepats)
# headless browser for the web page's test (tests/test_serve_browser.py drives it with Playwright)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else sudo="none"; fi
  if [ "$sudo" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: please install ${need[*]} (Debian package names); the demo corpus needs them" >&2
  else
    # on a freshly booted machine automatic updates often hold the dpkg lock for minutes:
    # wait for it (bounded; COVERHUNTER_APT_LOCK_TIMEOUT seconds) instead of failing at once
    lock_wait=${COVERHUNTER_APT_LOCK_TIMEOUT:-600}
    echo "setup: installing Debian packages: ${need[*]}" >&2
    echo "setup: if another package manager holds the dpkg lock, waiting for it (up to ${lock_wait} s)" >&2
    $sudo apt-get -o DPkg::Lock::Timeout="$lock_wait" update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout="$lock_wait" install -y -qq "${need[@]}" >/dev/null
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch goes first and pinned; the package's own range (torch>=2.3) is then already met, so
# pip never resolves torch by itself. What the pin installs depends on where pip looks:
#   - PyPI on Linux x86_64: the CUDA build (torch plus several GB of nvidia-* wheels), with or
#     without a GPU (it also runs on the CPU);
#   - PyPI on macOS: the CPU/MPS build; on Windows: the CPU build;
#   - a wheel house or mirror configured for pip (as on this project's offline build machine):
#     what it offers (there: the CPU wheel).
# Choose the build: COVERHUNTER_TORCH_SPEC (default torch==2.13.0; must pin a version) and
# TORCH_INDEX_URL, e.g. https://download.pytorch.org/whl/cpu for the small CPU-only build or
# https://download.pytorch.org/whl/cu126 for a given CUDA.
torch_spec=${COVERHUNTER_TORCH_SPEC:-torch==2.13.0}
case "$torch_spec" in
  *==*) ;;
  *) echo "setup: COVERHUNTER_TORCH_SPEC must pin a version (torch==X.Y.Z[+build]), got '$torch_spec'" >&2
     exit 1 ;;
esac
torch_index=()
[ -z "${TORCH_INDEX_URL:-}" ] || torch_index=(--index-url "$TORCH_INDEX_URL")
stamp=".venv/.coverhunter-$( (cat pyproject.toml; echo "$torch_spec ${TORCH_INDEX_URL:-}") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  if [ -n "${COVERHUNTER_TORCH_SPEC:-}${TORCH_INDEX_URL:-}" ] || ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q ${torch_index[@]+"${torch_index[@]}"} "$torch_spec"
  fi
  .venv/bin/pip install -q -e ".[dev]"
  # librosa compiles its numba kernels on first use (10-30 s) and caches them in the venv:
  # once here, not in every process that first computes a chroma
  echo "setup: compiling librosa's numba kernels (once)" >&2
  .venv/bin/python -c "import numpy as np; from coverhunter.chroma import audio_chroma; \
audio_chroma(np.random.default_rng(0).normal(size=64000).astype(np.float32))"
  rm -f .venv/.coverhunter-*
  touch "$stamp"
fi
