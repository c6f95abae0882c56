#!/usr/bin/env bash
# Install everything coverhunter needs on a fresh Debian/Ubuntu machine; safe to re-run.
#   - Debian packages for the corpora (fluidsynth, timidity, soundfonts) when missing
#   - .venv with the CPU build of torch 2.13.0 and the package with its extras
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
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else sudo="none"; fi
  if [ "$sudo" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: please install ${need[*]} (Debian package names); the demo corpus needs them" >&2
  else
    echo "setup: installing Debian packages: ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.coverhunter-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # torch first and pinned: a CPU wheel; an unpinned 'torch' would pull a multi-GB CUDA build
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.coverhunter-*
  touch "$stamp"
fi
