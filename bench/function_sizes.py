"""The largest functions of the application packages: lines and branches, to rerun before/after a refactor.

Not a test: it only reports figures. Parses every ``.py`` file under the given folders (default
``console controlplane workers``, migrations excluded) with ``ast`` and prints the largest
functions. Lines run from ``def`` (decorators excluded) to the last line of the body. Branches
count as ruff's PLR0912 does: each ``if``/``elif``, a non-``elif`` ``else``, each loop and its
``else``, each ``except``, a ``try``'s ``else`` and ``finally``, each ``match`` case. A nested
function's lines count in its parent (they are in its body) but its branches count only for
itself, as ruff reports them.

    .venv/bin/python bench/function_sizes.py [--top 10] [--sort lines|branches] [folder or file ...]
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOTS = ("console", "controlplane", "workers")


@dataclass(frozen=True)
class FunctionSize:
    path: str
    name: str
    line: int
    lines: int
    branches: int


def _branches(node: ast.AST) -> int:
    """PLR0912-style branch count of one function body, nested functions and classes left out."""
    count = 0
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        count += _own_branches(child) + _branches(child)
    return count


def _own_branches(node: ast.AST) -> int:
    if isinstance(node, ast.If):
        is_elif = len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If)
        return 1 + (1 if node.orelse and not is_elif else 0)
    if isinstance(node, ast.For | ast.AsyncFor | ast.While):
        return 1 + (1 if node.orelse else 0)
    if isinstance(node, ast.Try | ast.TryStar):
        return len(node.handlers) + (1 if node.orelse else 0) + (1 if node.finalbody else 0)
    if isinstance(node, ast.Match):
        return len(node.cases)
    return 0


def _qualified(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((prefix + child.name, child))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def function_sizes(roots: list[str]) -> list[FunctionSize]:
    sizes: list[FunctionSize] = []
    for root in roots:
        paths = [Path(root)] if Path(root).is_file() else sorted(Path(root).rglob("*.py"))
        for path in paths:
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for name, fn in _qualified(tree):
                lines = (fn.end_lineno or fn.lineno) - fn.lineno + 1
                sizes.append(FunctionSize(str(path), name, fn.lineno, lines, _branches(fn)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", default=list(DEFAULT_ROOTS))
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--sort", choices=("lines", "branches"), default="lines")
    args = parser.parse_args()
    sizes = function_sizes(args.roots)
    if args.sort == "lines":
        sizes.sort(key=lambda s: (s.lines, s.branches), reverse=True)
    else:
        sizes.sort(key=lambda s: (s.branches, s.lines), reverse=True)
    print(f"{'lines':>5} {'branches':>8}  function")
    for size in sizes[: args.top]:
        print(f"{size.lines:>5} {size.branches:>8}  {size.path}:{size.line} {size.name}")


if __name__ == "__main__":
    main()
