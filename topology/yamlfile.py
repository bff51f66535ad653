"""Reading a YAML file of ours (cluster spec, fabric file) so that whatever it holds, the only error is the
caller's own validation error (SpecError, FabricError) with a message that names the file and what is wrong.
Pure apart from reading the file.

Limits (LimitedLoader, which autoscaler/policy.py's policy loader uses too): collections nested deeper than MAX_DEPTH are refused
(deeper input would exhaust the parser's stack), an integer literal longer than MAX_INT_CHARS stays text (Python
refuses to parse one of over 4,300 digits) so that the field check names it, and text must be UTF-8.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Callable

import yaml

MAX_DEPTH = 64  # a cluster spec nests 4 deep, a fabric file 2 per switch level
MAX_INT_CHARS = 100


class TooDeep(yaml.YAMLError):
    """Raised by LimitedLoader for collections nested deeper than its max_depth."""


class LimitedLoader(yaml.SafeLoader):
    """SafeLoader with limits: collections nest at most `max_depth` deep (deeper input would exhaust the stack), and
    an integer literal longer than MAX_INT_CHARS stays text (Python refuses to parse one of over 4,300 digits),
    which every number field then rejects by name. Subclass it to change `max_depth` (autoscaler/policy.py)."""

    max_depth = MAX_DEPTH
    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > self.max_depth:
                raise TooDeep()
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_yaml_int(self, node: Any) -> Any:
        if len(node.value) > MAX_INT_CHARS:
            return self.construct_scalar(node)
        return super().construct_yaml_int(node)


LimitedLoader.add_constructor("tag:yaml.org,2002:int", LimitedLoader.construct_yaml_int)


def read_yaml(path: str | Path, what: str, error: Callable[[str], Exception]) -> Any:
    """The one YAML document in the file at `path` (`what` names the kind of file in messages). Raises
    `error(message)`, and only that, when the file cannot be read or is not UTF-8 YAML."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise error(f"{what} {p} cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise error(f"{what} {p} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}"
                    f"{', a UTF-16 byte-order mark' if utf16 else ''}); save it as UTF-8") from None
    try:
        loader = LimitedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except TooDeep:
        raise error(f"{what} {p}: YAML nested more than {MAX_DEPTH} levels deep; check the brackets") from None
    except Exception as exc:  # YAMLError, or what PyYAML's constructors raise on `!!bool maybe`, `2001-13-45`, ...
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        detail = ": ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or \
            (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"{what} {p} is not valid YAML ({at}{detail[:200]})") from None
