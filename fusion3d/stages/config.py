"""``fusion3d config``: print a resolved config, the schema (``--schema``), or the shipped configs
(``--list``). A config argument is a YAML file or the name of a shipped config (``fusion3d.configs``)."""

from __future__ import annotations

from fusion3d.config import describe, load_config
from fusion3d.configs import CONFIG_DIR, config_path, list_configs
from fusion3d.configs import describe as describe_config


def print_list() -> None:
    """One line per shipped config: its name and what it is, then where the files are."""
    names = list_configs()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {describe_config(name)}")
    print(
        f"\n{len(names)} configs in {CONFIG_DIR}. A name works wherever a config path does, e.g. "
        f"`fusion3d train synth_motion data.root=DIR data.annotations=DIR/ucfTrainTestlist`; "
        f"`fusion3d config NAME` prints one resolved."
    )


def command(args) -> int:
    import yaml

    from fusion3d.config import to_dict

    if getattr(args, "list", False):
        print_list()
        return 0
    if args.schema:
        rows = describe()
        width = max(len(r[0]) for r in rows)
        for key, tp, default, help_ in rows:
            print(f"{key:<{width}}  {default:<24} {help_}  [{tp}]")
        return 0
    path, overrides = config_path(args.config), args.overrides
    print(yaml.safe_dump(to_dict(load_config(path, overrides)), sort_keys=False), end="")
    return 0
