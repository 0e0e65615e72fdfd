"""Rewrites of parsed statements before DataFusion sees them: pure functions over sqlglot
trees, applied in order by `apply`. Each takes a tree and returns the rewritten tree."""

from __future__ import annotations

from sqlglot import exp


def fold_identifiers(tree: exp.Expression) -> exp.Expression:
    """Unquoted identifiers fold to lower case, as in PostgreSQL; afterwards all are quoted so
    DataFusion keeps them exactly."""
    for node in tree.find_all(exp.Identifier):
        if not node.quoted:
            node.set("this", node.this.lower())
            node.set("quoted", True)
    return tree


def bytea_hex_literals(tree: exp.Expression) -> exp.Expression:
    """`'\\x0102'::bytea` is PostgreSQL's hex input format: make it a binary literal."""
    for cast in list(tree.find_all(exp.Cast)):
        value = cast.this
        if (cast.to.this in (exp.DataType.Type.VARBINARY, exp.DataType.Type.BINARY)
                and isinstance(value, exp.Literal) and value.is_string
                and value.this.startswith("\\x")):
            try:
                bytes.fromhex(value.this[2:])
            except ValueError:
                continue  # left to DataFusion, which reports the bad value
            cast.replace(exp.HexString(this=value.this[2:]))
    return tree


RULES = (fold_identifiers, bytea_hex_literals)


def apply(tree: exp.Expression) -> exp.Expression:
    for rule in RULES:
        tree = rule(tree)
    return tree
