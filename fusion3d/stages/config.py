"""``fusion3d config``: print a resolved config, or the schema."""

from __future__ import annotations

from fusion3d.config import describe, load_config


def command(args) -> int:
    import yaml

    from fusion3d.config import to_dict

    if args.schema:
        rows = describe()
        width = max(len(r[0]) for r in rows)
        for key, tp, default, help_ in rows:
            print(f"{key:<{width}}  {default:<24} {help_}  [{tp}]")
        return 0
    path, overrides = args.config, args.overrides
    print(yaml.safe_dump(to_dict(load_config(path, overrides)), sort_keys=False), end="")
    return 0
