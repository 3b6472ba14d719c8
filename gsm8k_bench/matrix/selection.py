"""Which sessions a command runs: `-s NAME ...`, `-k EXPR` and `-t TAG ...` with nox's own semantics."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from gsm8k_bench.core.errors import BenchError, ConfigError, RaisingArgumentParser, shorten, unknown_choice
from gsm8k_bench.matrix.types import Combination, Matrix

# A -k expression is compiled by nox: past a few thousand nested `not`s or parentheses Python's compiler
# overflows its recursion limit.  Real selections are a few names long.
MAX_KEYWORDS_CHARS = 1000


def check_keywords(keywords: str, what: str = "-k") -> str:
    if len(keywords) > MAX_KEYWORDS_CHARS:
        raise ConfigError(f"{what}: the expression has {len(keywords)} characters; at most {MAX_KEYWORDS_CHARS} "
                          "are allowed")
    return keywords


def select(combos: Iterable[Combination], keywords: str | None = None,
           tags: Iterable[str] = (), names: Iterable[str] = ()) -> list[Combination]:
    """The slice nox would run for `-s NAME ...`, `-k EXPR` and `-t TAG ...` (nox's own semantics)."""
    from nox.manifest import keyword_match

    combos = list(combos)
    names = list(names)
    if names:
        by_name = {c.name: c for c in combos}
        for name in names:
            if name not in by_name:
                raise ConfigError(unknown_choice("session", name, by_name))
        combos = [by_name[name] for name in names]
    tags = set(tags)
    if tags:
        combos = [c for c in combos if tags.intersection(c.tags)]
    if keywords:
        check_keywords(keywords)
        try:
            combos = [c for c in combos if keyword_match(keywords, [c.name, *c.tags])]
        except SyntaxError as exc:
            raise ConfigError(f"-k {shorten(keywords)} is not a valid expression: {exc.msg}") from None
        except (RecursionError, MemoryError):
            raise ConfigError(f"-k {shorten(keywords)}: nested too deeply to compile") from None
    return combos


def selection_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """A parser that selects sessions as nox does (-k, -t, -s); callers add their own options."""
    parser = RaisingArgumentParser(prog=prog, description=description)
    parser.add_argument("-k", dest="keywords", help="nox keyword expression, e.g. 'h100 and vllm'")
    parser.add_argument("-t", dest="tags", nargs="+", default=[], help="tags, e.g. mi355x fp8")
    parser.add_argument("-s", dest="names", nargs="+", default=[], help="session names")
    return parser


def selected(matrix: Matrix, args: argparse.Namespace) -> list[Combination]:
    combos = select(matrix.combinations, args.keywords, args.tags, args.names)
    if not combos:
        raise BenchError("the selection matches no session (see nox -l)")
    return combos
