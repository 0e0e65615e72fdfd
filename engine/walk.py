"""Walking sqlglot trees cheaply.

Statements used to be walked about a dozen times each (a `find_all` per rewrite and per
binding step), and sqlglot's walk is a chain of generators, 2.5x slower than the plain loop
in `nodes`. `Kinds` records in one walk which node types and function names a tree holds,
so a rewrite with nothing to rewrite is skipped without walking at all.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp


def nodes(tree: exp.Expr, prune: Callable[[exp.Expr], bool] | None = None) -> list[exp.Expr]:
    """The nodes of `tree` in the order `tree.walk()` (breadth first) yields them; below a
    node for which `prune` is true, nothing."""
    out = [tree]
    append = out.append
    for node in out:  # the list grows while it is read: breadth first
        if prune is not None and prune(node):
            continue
        for value in node.args.values():  # what Expr.iter_expressions yields, in its order
            if isinstance(value, list):
                for v in value:
                    if isinstance(v, exp.Expr):
                        append(v)
            elif isinstance(value, exp.Expr):
                append(value)
    return out


def find_all(tree: exp.Expr, *types: type) -> list[exp.Expr]:
    """`list(tree.find_all(*types))`, in one loop."""
    return [n for n in nodes(tree) if isinstance(n, types)]


class Kinds:
    """The node types of a tree and the lower-case names of its plain function calls
    (`exp.Anonymous`), seen in one walk."""

    __slots__ = ("types", "functions", "_has")

    def __init__(self, tree: exp.Expr):
        found = nodes(tree)
        self.types = {type(n) for n in found}
        self.functions = {n.name.lower() for n in found if isinstance(n, exp.Anonymous)}
        self._has: dict[tuple, bool] = {}

    def has(self, *types: type) -> bool:
        """Whether the tree holds a node of one of `types` (or of a subclass)."""
        answer = self._has.get(types)
        if answer is None:
            answer = self._has[types] = any(issubclass(t, types) for t in self.types)
        return answer

    def calls(self, *names: str) -> bool:
        """Whether the tree calls a function of one of these (lower-case) names."""
        return not self.functions.isdisjoint(names)
