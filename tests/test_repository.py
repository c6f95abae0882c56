"""What the repository claims is so: fixtures in the repository, the shipped model's
recipe, no committed caches, the embedding cache's place and keys, the README's figures,
the declared dependencies and the torch build choice."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

from coverhunter.config import load_config, to_dict
from coverhunter.embed import EmbeddingCache, Windowing, default_cache_dir

from .conftest import FIXTURES, reference_dir

ROOT = Path(__file__).resolve().parents[1]


def test_parity_fixtures_are_in_the_repository_and_intact():
    assert reference_dir() == FIXTURES or os.environ.get("COVERHUNTER_REFERENCE")
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        if name == "README.md":
            continue
        data = (FIXTURES / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], name


def test_conftest_never_skips_parity_tests():
    text = (ROOT / "tests" / "conftest.py").read_text()
    assert "pytest.skip(" not in text and "shared" not in text


PATH_KEYS = {("data", "train_path"), ("data", "val_path"), ("data", "align_path")}


def _flat(d: dict, prefix=()) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "test_sets":
            out.update(_flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


@pytest.mark.parametrize("name", ["default", "cqt"])
def test_shipped_model_config_is_the_committed_recipe(name):
    shipped = torch.load(ROOT / "models" / name / "model.pt", map_location="cpu", weights_only=True)["config"]
    recipe = to_dict(load_config(ROOT / "models" / name / "hparams.yaml"))
    a, b = _flat(to_dict(load_config(shipped))), _flat(recipe)
    diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if k not in PATH_KEYS and a.get(k) != b.get(k)}
    assert not diff, f"model.pt vs hparams.yaml (shipped, recipe): {diff}"


@pytest.mark.parametrize("name", ["default", "cqt"])
def test_recipe_does_not_overwrite_the_shipped_model_in_place(name):
    sh = (ROOT / "models" / name / "train.sh").read_text()
    steps = [line for line in sh.splitlines() if not line.startswith("#")]
    writes = [line for line in steps if f"models/{name}/model.pt" in line]
    assert len(writes) == 1 and writes[0].startswith("cp ") and writes[0] == steps[-1]


def test_no_cache_in_the_repository_and_caches_ignored():
    assert not (ROOT / "models" / "default" / "embed_cache").exists()
    assert "embed_cache/" in (ROOT / ".gitignore").read_text()


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("COVERHUNTER_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("COVERHUNTER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "coverhunter"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "coverhunter"
    win = Windowing(10, 5)
    assert EmbeddingCache(None, "m", win).dir == Path.home() / ".cache" / "coverhunter" / f"m-{win.key()}"


def test_cache_is_keyed_by_feature_content(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", "model", Windowing(10, 5))
    f = tmp_path / "a.npy"
    np.save(f, np.zeros((20, 4), np.float32))
    cache.put(f, np.ones((2, 3), np.float32), [0, 10])
    moved = tmp_path / "elsewhere" / "b.npy"
    moved.parent.mkdir()
    shutil.copy(f, moved)
    assert cache.get(moved)[1] == [0, 10]  # same bytes elsewhere: a hit
    st = f.stat()
    np.save(f, np.full((20, 4), 7.0, np.float32))  # same size, new content ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime
    assert cache.get(f) is None


def test_readme_figures_without_a_command_are_gone():
    text = (ROOT / "README.md").read_text()
    # the old random-ranking row (MAP 0.129, no command behind it); 0.129 may appear as a
    # bound of a benchmark's confidence interval, so the row is recognised by its label
    assert "random ranking (average of 20 draws)" not in text
    assert re.search(r"(?<!\[)\b0\.129\b(?!,)", text) is None
    assert "34 % within 1.5 s" not in text
    assert "MODEL/embed_cache" not in text


def test_declared_dependencies():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = proj["dependencies"]
    assert "torch>=2.3" in deps and not any(d.startswith("scipy") for d in deps)
    assert any(d.startswith("scipy") for d in proj["optional-dependencies"]["demo"])


def _sandbox(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A copy of setup.sh with a fake .venv whose pip records its arguments, and stub
    system commands; no network, nothing installed."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    log = tmp_path / "pip.log"
    bin_ = tmp_path / "bin"
    (repo / ".venv" / "bin").mkdir(parents=True)
    bin_.mkdir()

    def script(path: Path, body: str) -> None:
        path.write_text("#!/usr/bin/env bash\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)

    script(repo / ".venv" / "bin" / "python", 'case "$*" in *"import torch"*) exit 1;; esac; exit 0')
    script(repo / ".venv" / "bin" / "pip", f'echo "$*" >> "{log}"')
    for name in ("apt-get", "sudo", "fluidsynth", "timidity"):
        script(bin_ / name, "exit 0")
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}
    for k in ("COVERHUNTER_TORCH_SPEC", "TORCH_INDEX_URL"):
        env.pop(k, None)
    return repo, log, env


def test_setup_pins_torch_by_default_and_lets_the_user_choose(tmp_path):
    repo, log, env = _sandbox(tmp_path)
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "install -q torch==2.13.0" and lines[1] == "install -q -e .[dev]"
    log.unlink()
    env2 = {
        **env,
        "COVERHUNTER_TORCH_SPEC": "torch==2.13.0+cpu",
        "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
    }
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env2, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines()[0] == (
        "install -q --index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu"
    )


def test_setup_refuses_an_unpinned_torch(tmp_path):
    repo, log, env = _sandbox(tmp_path)
    r = subprocess.run(
        ["bash", "scripts/setup.sh"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**env, "COVERHUNTER_TORCH_SPEC": "torch"},
    )
    assert r.returncode != 0 and "pin" in r.stderr
    assert not log.exists()  # pip never asked for an unpinned torch


def test_setup_waits_for_the_dpkg_lock_with_a_bound(tmp_path):
    """apt-get waits for a held dpkg lock (DPkg::Lock::Timeout) and the
    set-up says so, instead of failing at once on a freshly booted machine."""
    repo, _, env = _sandbox(tmp_path)
    bin_ = tmp_path / "only"  # a PATH without the synthesizers, so apt-get is asked for them
    bin_.mkdir()
    for tool in ("bash", "dirname", "id", "cat", "sha256sum", "cut", "rm", "touch", "env"):
        (bin_ / tool).symlink_to(shutil.which(tool))
    apt_log = tmp_path / "apt.log"
    (bin_ / "apt-get").write_text(f'#!{shutil.which("bash")}\necho "$*" >> "{apt_log}"\n')
    (bin_ / "apt-get").chmod(0o755)
    (bin_ / "sudo").write_text(f'#!{shutil.which("bash")}\nexec "$@"\n')  # when not run as root
    (bin_ / "sudo").chmod(0o755)
    r = subprocess.run(
        [str(bin_ / "bash"), "scripts/setup.sh"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**env, "PATH": str(bin_), "COVERHUNTER_APT_LOCK_TIMEOUT": "42"},
    )
    assert r.returncode == 0, r.stderr
    calls = apt_log.read_text().splitlines()
    assert len(calls) == 2 and all(c.startswith("-o DPkg::Lock::Timeout=42 ") for c in calls), calls
    assert "waiting for it (up to 42 s)" in r.stderr
