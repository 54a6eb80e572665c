"""``fusion3d data synth`` and ``fusion3d data scan``: synthetic datasets and a pre-scan of real ones."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fusion3d.config import load_config
from fusion3d.configs import config_path


def synth(args) -> int:
    from fusion3d.data.synth import generate

    t0 = time.time()
    out = generate(
        args.out,
        kind=args.kind,
        classes=args.classes,
        videos_per_class=args.videos_per_class,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
        progress=True,
        test_per_class=args.test_per_class,
    )
    print(
        f"wrote {args.kind} dataset to {out} in {time.time() - t0:.1f}s "
        f"(UCF101 layout: annotations in {Path(out) / 'ucfTrainTestlist'})"
    )
    return 0


def scan(args) -> int:
    import pandas as pd

    from fusion3d.data.formats import parse
    from fusion3d.data.scan import escaped_rows, scan_videos, summarize
    from fusion3d.utils import atomic_write_text

    path, overrides = config_path(args.config), args.overrides
    cfg = load_config(path, overrides)
    d = cfg.data
    parsed = parse(d.format, d.root, d.annotations, args.subset, d.split)
    paths = [r.path for r in parsed.records] + list(parsed.missing)
    df = scan_videos(paths, min_frames=d.min_frames, full=args.full, progress=sys.stderr.isatty())
    if parsed.escaped:  # listed, never opened
        df = pd.concat([df, escaped_rows(parsed.escaped, d.root)], ignore_index=True)
    total = len(parsed.records) + len(parsed.missing) + len(parsed.escaped)
    print(f"{d.format} {args.subset}: {total} annotated videos")
    print(summarize(df))
    out = Path(args.csv) if args.csv else Path(d.cache_dir) / f"scan_{args.subset}.csv"
    atomic_write_text(out, df.to_csv(index=False))
    print(f"wrote {out}")
    bad = int((df["status"] != "ok").sum())
    return 0 if bad < len(df) else 2
