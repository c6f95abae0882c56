"""The identification service under load, and a 2-hour recording with its segments.

    .venv/bin/python benchmarks/bench_serve.py            # 8 clients x 25 requests, 10,000 recordings, 2 h
    .venv/bin/python benchmarks/bench_serve.py --quick    # 2 x 5, 1,000 recordings, 20 min

Loopback only, bounded in count and time. Steps:

1. a small real cover corpus (``make_demo_corpus``, rendered once into ``--work-dir``,
   or ``--corpus DIR`` with a ``dataset.txt``): version 0 of every work goes into the
   catalogue, the other versions, looped to 4 minutes, are the queries;
2. the catalogue is padded to ``--catalogue`` recordings with distractor recordings
   whose chunk vectors are mixtures of real catalogue chunks plus noise (written as
   extra index shards; they are never the answer, but every search scans them);
3. each distinct query is identified in-process (``coverhunter.identify``, sequentially):
   the reference answers and the in-process latency and throughput;
4. ``coverhunter serve`` runs as a separate process; ``--clients`` threads send
   ``--requests`` uploads each; every answer is checked against the in-process answer
   (same best work, same works and scores within 2e-3, 10 matches, its own file name:
   none lost, none mixed up), and the server's memory is sampled across the run;
5. a ``--long-min`` minutes recording made of looped covers of different works is
   identified with ``identify --segments`` in a child process: seconds, peak RSS and
   how much of its time the segments attribute to the right work.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# data


def corpus(args) -> list:
    from coverhunter.dataset import read_dataset

    if args.corpus:
        return read_dataset(Path(args.corpus) / "dataset.txt")
    from coverhunter.corpus import make_demo_corpus

    out = args.work_dir / f"corpus_w{args.works}"
    log(f"rendering (or reusing) a demo corpus of {args.works} works x 3 versions in {out}")
    return make_demo_corpus(out, works=args.works, versions=3, seed=11, verbose=False)


def looped(path: str, seconds: float) -> np.ndarray:
    from coverhunter.audio import load_audio

    y = load_audio(path)
    return np.tile(y, int(np.ceil(seconds * SR / len(y))))[: int(seconds * SR)]


def build_catalogue(args, tracks, lm) -> Path:
    from coverhunter.dataset import write_dataset
    from coverhunter.index import CatalogueIndex, build_index

    index = args.work_dir / f"index_{args.catalogue}_w{args.works}"
    if (index / "meta.json").is_file() and CatalogueIndex.load(index).meta["n_tracks"] == args.catalogue:
        return index
    first = [t for t in tracks if t.version == sorted(x.version for x in tracks if x.work == t.work)[0]]
    write_dataset(first, args.work_dir / "catalogue.txt")
    log(f"indexing {len(first)} real recordings")
    idx, _ = build_index(index, lm, dataset=args.work_dir / "catalogue.txt", overwrite=True, backend="exact")
    pad_with_distractors(idx, args.catalogue - len(first))
    return index


def pad_with_distractors(idx, n: int, chunks: int = 8, seed: int = 0) -> None:
    """Append ``n`` synthetic recordings (index file format: shard .npy + .jsonl, meta.json)."""
    from coverhunter.utils import atomic_write_text

    rng = np.random.default_rng(seed)
    real = np.asarray(idx.vectors())
    m = n * chunks
    a, b = real[rng.integers(0, len(real), m)], real[rng.integers(0, len(real), m)]
    w = rng.uniform(0.4, 0.6, (m, 1)).astype(np.float32)  # halfway between two real chunks
    v = w * a + (1 - w) * b + 0.5 * rng.standard_normal(a.shape).astype(np.float32) / np.sqrt(a.shape[1])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    meta = idx.meta
    name = f"shard_{len(meta['shards']):05d}"
    np.save(idx.root / f"{name}.npy", v.astype(np.float32))
    n0 = meta["n_vectors"]
    rows = [
        {
            "track_id": f"distractor_{i:05d}",
            "work": f"distractor work {i:05d}",
            "audio": "",
            "row": n0 + i * chunks,
            "starts": [7.5 * k for k in range(chunks)],
        }
        for i in range(n)
    ]
    atomic_write_text(idx.root / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    meta["shards"].append(name)
    meta["n_tracks"] += n
    meta["n_vectors"] += m
    atomic_write_text(idx.root / "meta.json", json.dumps(meta, indent=1))


def make_queries(args, tracks) -> list[tuple[Path, str]]:
    out = args.work_dir / "queries"
    out.mkdir(parents=True, exist_ok=True)
    firsts = {}
    for t in tracks:
        firsts.setdefault(t.work, t.version)
    qs = []
    for t in tracks:
        if t.version == firsts[t.work]:
            continue
        path = out / f"{t.track_id}.flac"
        if not path.is_file():
            sf.write(path, looped(t.audio, args.query_s), SR)
        qs.append((path, t.work))
    return qs[: args.max_queries]


def make_long(args, tracks, path: Path) -> list[tuple[float, float, str]]:
    """Looped covers of different works, 3 minutes each, written block by block."""
    rng = np.random.default_rng(5)
    firsts = {}
    for t in tracks:
        firsts.setdefault(t.work, t.version)
    covers = [t for t in tracks if t.version != firsts[t.work]]
    truth, pos, total = [], 0.0, args.long_min * 60
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        last = None
        while pos < total:
            t = covers[int(rng.integers(len(covers)))]
            if t.work == last:
                continue
            seg = min(180.0, total - pos)
            y = looped(t.audio, seg)
            f.write(0.9 * y / max(1e-3, np.abs(y).max()))
            truth.append((pos, pos + seg, t.work))
            pos, last = pos + seg, t.work
    return truth


# ---------------------------------------------------------------------------
# measuring


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_answer(got: dict, ref, name: str, top: int) -> str | None:
    """Why a service answer differs from the in-process one (None when it does not)."""
    if got.get("query") != name:
        return f"answer for {got.get('query')!r}, sent {name!r}"
    if len(got["matches"]) != min(top, len(ref.matches) or top):
        return f"{len(got['matches'])} matches"
    if got["matches"][0]["work"] != ref.matches[0].work:
        return f"best work {got['matches'][0]['work']} != {ref.matches[0].work}"
    g = {m["work"]: m["score"] for m in got["matches"]}
    r = {m.work: m.score for m in ref.matches}
    common = set(g) & set(r)
    if len(common) < len(r) - 1 or any(abs(g[w] - r[w]) > 2e-3 for w in common):
        return "works or scores differ"
    return None


def in_process(idx, lm, queries):
    """Reference answers and timings: ``coverhunter.identify`` of each query, sequentially."""
    import coverhunter as ch

    refs, t_in = {}, []
    ch.identify(idx, lm, [queries[0][0]])  # warm-up
    for path, _ in queries:
        t0 = time.perf_counter()
        refs[path] = ch.identify(idx, lm, [path])[0]
        t_in.append(time.perf_counter() - t0)
    acc = float(np.mean([refs[p].matches[0].work == w for p, w in queries]))
    log(f"in-process: median {np.median(t_in):.2f} s per query")
    return refs, t_in, acc


def load_test(url: str, queries, refs, clients: int, requests: int, server_pid: int, top: int = 10):
    import httpx

    results, mem = [], [rss_mb(server_pid)]
    lock = threading.Lock()
    done = [0]

    def client(c: int):
        with httpx.Client(timeout=600) as http:
            for i in range(requests):
                path, work = queries[(c * requests + i) % len(queries)]
                name = f"c{c}_r{i}_{path.name}"
                t0 = time.perf_counter()
                r = http.post(f"{url}/identify", files={"file": (name, path.read_bytes(), "audio/flac")})
                dt = time.perf_counter() - t0
                problem = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
                if problem is None:
                    problem = same_answer(r.json(), refs[path], name, top)
                best = r.json()["matches"][0]["work"] if r.status_code == 200 else None
                with lock:
                    results.append((dt, problem, best == work))
                    done[0] += 1
                    if done[0] % max(1, (clients * requests) // 4) == 0:
                        mem.append(rss_mb(server_pid))
                        log(f"  {done[0]}/{clients * requests} answered, server RSS {mem[-1]:.0f} MB")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0, mem


def run_long(args, index: Path, path: Path, truth) -> dict:
    cmd = [
        str(ROOT / ".venv/bin/coverhunter"),
        "identify",
        str(path),
        "--index",
        str(index),
        "--segments",
        "--json",
    ]
    if not Path(cmd[0]).exists():
        cmd = [sys.executable, "-m", "coverhunter"] + cmd[1:]
    out_f, err_f = path.with_suffix(".json"), path.with_suffix(".log")
    t0 = time.perf_counter()
    peak = 0.0
    with open(out_f, "w") as o, open(err_f, "w") as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e)
        # the child's own high-water mark (VmHWM starts afresh at exec; getrusage would count
        # this benchmark's memory, which the child shares between fork and exec)
        while p.poll() is None:
            try:
                peak = max(peak, rss_mb(p.pid, "VmHWM"))
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
    seconds = time.perf_counter() - t0
    out, err = out_f.read_text(), err_f.read_text()
    if p.returncode != 0:
        raise RuntimeError(f"identify --segments failed: {err[-2000:]}")
    segs = json.loads(out)[0]["segments"]
    right = 0.0
    for s in segs:
        for a, b, work in truth:
            overlap = min(b, s["end_s"]) - max(a, s["start_s"])
            if overlap > 0 and work == s["work"]:
                right += overlap
    return {
        "seconds": seconds,
        "peak_rss_mb": peak,
        "segments": len(segs),
        "true_segments": len(truth),
        "right_share": right / truth[-1][1],
        "progress_lines": err.count("analysed"),
    }


# ---------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 clients x 5 requests, 1,000 recordings, 20 min")
    p.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "bench_serve")
    p.add_argument("--corpus", type=Path, default=None, help="a data folder with dataset.txt")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default" / "model.pt")
    p.add_argument("--works", type=int, default=16)
    p.add_argument("--catalogue", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=25)
    p.add_argument("--query-s", type=float, default=240.0)
    p.add_argument("--max-queries", type=int, default=16)
    p.add_argument("--long-min", type=float, default=120.0)
    args = p.parse_args()
    if args.quick:
        args.works, args.catalogue, args.clients, args.requests = 8, 1000, 2, 5
        args.max_queries, args.long_min = 8, 20.0
    args.work_dir.mkdir(parents=True, exist_ok=True)

    import torch

    import coverhunter as ch
    from coverhunter.index import CatalogueIndex

    lm = ch.load_model(args.model)
    tracks = corpus(args)
    index = build_catalogue(args, tracks, lm)
    idx = CatalogueIndex.load(index)
    queries = make_queries(args, tracks)
    log(
        f"catalogue {idx.meta['n_tracks']} recordings ({idx.meta['n_vectors']} chunk vectors), "
        f"{len(queries)} distinct {args.query_s / 60:.0f}-minute queries"
    )

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coverhunter",
            "serve",
            "--index",
            str(index),
            "--port",
            str(port),
            "--queue-size",
            str(2 * args.clients + 2),
        ],
        stderr=open(args.work_dir / "server.log", "w"),
        stdout=subprocess.DEVNULL,
    )
    import httpx

    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("server did not start")
        # the server imported the code moments ago: the in-process answers now use the same
        # code even while the working tree changes (the reference, and the in-process timing)
        refs, t_in, acc_in = in_process(idx, lm, queries)
        del lm
        log(f"server up (RSS {rss_mb(server.pid):.0f} MB); {args.clients} clients x {args.requests} requests")
        results, wall, mem = load_test(url, queries, refs, args.clients, args.requests, server.pid)
        peak_server = rss_mb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(30)
    lat = np.array([r[0] for r in results])
    problems = [r[1] for r in results if r[1]]
    n = args.clients * args.requests

    long_path = args.work_dir / f"long_{args.long_min:.0f}min.wav"
    log(f"writing a {args.long_min:.0f}-minute recording of looped covers")
    truth = make_long(args, tracks, long_path)
    log("identify --segments on it (child process)")
    long = run_long(args, index, long_path, truth)

    torch_threads = torch.get_num_threads()
    print(
        f"\n## bench_serve ({os.cpu_count()} cores, torch threads {torch_threads}; catalogue "
        f"{idx.meta['n_tracks']:,} recordings / {idx.meta['n_vectors']:,} chunk vectors; "
        f"{len(queries)} distinct {args.query_s / 60:.0f}-min queries)\n"
    )
    print("| | requests | p50 latency | p99 latency | throughput | answers checked |")
    print("|---|---|---|---|---|---|")
    print(
        f"| service, {args.clients} clients x {args.requests} | {n} | {np.percentile(lat, 50):.2f} s | "
        f"{np.percentile(lat, 99):.2f} s | {n / wall:.2f} req/s | "
        f"{n - len(problems)}/{n} same as in-process |"
    )
    print(
        f"| in-process, sequential | {len(t_in)} | {np.percentile(t_in, 50):.2f} s | "
        f"{np.percentile(t_in, 99):.2f} s | {1 / np.mean(t_in):.2f} q/s | (reference) |"
    )
    print(
        f"\nthroughput ratio service / in-process: {(n / wall) * np.mean(t_in):.2f}; "
        f"top-1 = true work: {np.mean([r[2] for r in results]):.0%} (service), {acc_in:.0%} (in-process)"
    )
    print(
        f"server RSS across the run (MB): {' -> '.join(f'{m:.0f}' for m in mem)}; peak {peak_server:.0f} MB"
    )
    if problems:
        print(f"PROBLEMS ({len(problems)}): {problems[:5]}")
    print(
        f"\n| {args.long_min:.0f}-minute recording, identify --segments | seconds | peak RSS | segments "
        f"(true) | time on the right work |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| child process | {long['seconds']:.1f} | {long['peak_rss_mb']:.0f} MB | {long['segments']} "
        f"({long['true_segments']}) | {long['right_share']:.0%} |"
    )


if __name__ == "__main__":
    main()
