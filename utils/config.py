"""Optional YAML of defaults for an argparse parser, and the resolved args dumped as YAML.

Order of precedence: parser defaults < ``--config FILE`` < explicit command-line flags.
Unknown keys and type mismatches in the YAML are errors naming the file and key.
"""
from __future__ import annotations

import argparse
import os
import sys

import yaml


def _type_ok(action: argparse.Action, value) -> bool:
    if value is None:
        return True
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        return isinstance(value, bool) or (action.const is not None and type(value) is type(action.const))
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            return False
        return all(_scalar_ok(action, v) for v in value)
    return _scalar_ok(action, value)


def _scalar_ok(action, value) -> bool:
    if action.choices is not None and value not in action.choices:
        return False
    t = action.type
    if t is None or t is str:
        return isinstance(value, str)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        t(value)
        return True
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False


def load_yaml_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    if not os.path.isfile(path):
        parser.error(f"--config {path}: file not found")
    with open(path) as f:
        try:
            cfg = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            parser.error(f"--config {path}: invalid YAML: {e}")
    if not isinstance(cfg, dict):
        parser.error(f"--config {path}: top level must be a mapping of flag names to values")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    out = {}
    for k, v in cfg.items():
        if k not in actions:
            parser.error(f"--config {path}: unknown key {k!r} (not a flag of this script)")
        if not _type_ok(actions[k], v):
            a = actions[k]
            want = "one of " + str(a.choices) if a.choices else (getattr(a.type, "__name__", "bool") + (
                " list" if a.nargs in ("+", "*") else ""))
            parser.error(f"--config {path}: key {k!r} has value {v!r} of type {type(v).__name__}; expected {want}")
        out[k] = v
    return out


def explicit_dests(parser: argparse.ArgumentParser, argv) -> set:
    """The flags (by dest) the user gave on the command line."""
    tokens = [t for t in argv if t.startswith("-")]
    out = set()
    for a in parser._actions:
        for opt in a.option_strings:
            if any(t == opt or t.startswith(opt + "=") for t in tokens):
                out.add(a.dest)
    return out


def parse_with_config(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Two-pass parse: read --config first, set those as defaults, then parse the full command line.

    ``args._explicit`` holds the dests the user set (command line or --config): on resume, a checkpoint's
    architecture fills the others, and a conflict with an explicit one is an error."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    from_yaml = {}
    if known.config:
        from_yaml = load_yaml_defaults(parser, known.config)
        parser.set_defaults(**from_yaml)
    args = parser.parse_args(argv)
    args.config = known.config
    args._explicit = sorted(explicit_dests(parser, argv) | set(from_yaml))
    return args


def dump_args_yaml(args: argparse.Namespace, path: str) -> str | None:
    """Write the resolved args (private ``_`` entries left out). An existing file is kept as ``args.N.yaml``
    (the next free N), so a rerun in the same folder never loses the record of an earlier run. Returns the name
    the old file was moved to, if any."""
    from .checkpoint_io import to_plain

    plain = {k: v for k, v in to_plain(args).items() if not hasattr(v, "shape") and not k.startswith("_")}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kept = None
    if os.path.exists(path):
        stem, ext = os.path.splitext(path)
        n = 1
        while os.path.exists(f"{stem}.{n}{ext}"):
            n += 1
        kept = f"{stem}.{n}{ext}"
        os.replace(path, kept)
    with open(path + ".tmp", "w") as f:
        yaml.safe_dump(plain, f, sort_keys=True)
    os.replace(path + ".tmp", path)
    return kept
