"""DARTS / NAS-Bench-301 genotypes as plain data: parsing, validation, string forms, node renumbering.

A genotype is a normal and a reduction cell. Cell inputs are 0 = c_{k-2}, 1 = c_{k-1}; intermediate node j
(0..3) is input j+2 of later nodes, takes two *distinct* inputs < j+2 (as every NB301 genotype does) and
sums one op applied to each; the cell output concatenates the 4 intermediate nodes (concat [2, 3, 4, 5]).
Ops: the 7 of NAS-Bench-301 (OPS, in NASLib's op_id order).

Arch: (normal, reduce); a cell is 4 nodes, a node its two (input, op name) pairs sorted by (input, op_id).

Strings `parse_genotype` accepts:
- DARTS text: `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...],
  reduce_concat=[2, 3, 4, 5])` (quark0/darts genotypes.py; a `range(2, 6)` concat too), read with `ast`,
  never evaluated;
- NASLib compact: `[[normal 8 x (input, op_id)], [reduce 8 x (input, op_id)]]`, two consecutive pairs per
  node (the keys of naslib_zc_nasbench301_725.json);
- the canonical form (`to_compact`): the compact form with each node's two pairs sorted, so both orders of
  a node's inputs are one architecture. It is itself a valid NASLib compact key.

`canonical_cell` also renumbers intermediate nodes: any order of the 4 nodes that keeps every node after
the nodes it reads computes the same cell up to a permutation of the output channels, which whatever
reads the cell output (1x1 preprocessing convs, FactorizedReduce, global pool + classifier) absorbs. The
smallest such renumbering is the cell's isomorphism class. Not caught: op-level identities (e.g. a pooling
op on a pooled input), and that cell 0 of the network reads the stem output as both c_{k-2} and c_{k-1}
(swapping inputs 0/1 is an equivalence there only, not in the other cells that share the genotype).
"""
from __future__ import annotations

import ast
import itertools
import re
from typing import Any

from pipeline.errors import ArchError

OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5")  # NASLib's op_id order
OP_ID = {op: i for i, op in enumerate(OPS)}
NUM_NODES = 4       # intermediate nodes per cell
CONCAT = (2, 3, 4, 5)
CELLS = ("normal", "reduce")

Pair = tuple  # (input index, op name)
Cell = tuple  # 4 nodes, each (Pair, Pair) sorted
Arch = tuple  # (normal Cell, reduce Cell)


def _pair_key(pair: Pair) -> tuple[int, int]:
    return pair[0], OP_ID[pair[1]]


def sorted_node(a: Pair, b: Pair) -> tuple[Pair, Pair]:
    return tuple(sorted((a, b), key=_pair_key))


# -- strings -----------------------------------------------------------------------------------------

def _bad(text: Any, problem: str) -> ArchError:
    shown = repr(text)
    shown = shown if len(shown) <= 1000 else shown[:1000] + "..."  # a DARTS genotype is ~500
    return ArchError(f"malformed DARTS genotype {shown}: {problem}")


def _check_cell(pairs: Any, which: str, text: Any) -> Cell:
    """Validate one cell's 8 (input, op name) pairs in node order; return it canonical (pairs sorted)."""
    if not isinstance(pairs, (list, tuple)) or len(pairs) != 2 * NUM_NODES:
        n = len(pairs) if isinstance(pairs, (list, tuple)) else type(pairs).__name__
        raise _bad(text, f"{which} cell has {n} (input, op) pairs, need {2 * NUM_NODES} "
                         f"({NUM_NODES} intermediate nodes x 2)")
    nodes = []
    for j in range(NUM_NODES):
        node = []
        for p in range(2):
            k = 2 * j + p
            inp, op = pairs[k]
            if not isinstance(op, str) or op not in OP_ID:
                raise _bad(text, f"unknown op {op!r} in {which} cell pair {k} (node {j}); ops: {', '.join(OPS)}")
            if not isinstance(inp, int) or isinstance(inp, bool) or not 0 <= inp < j + 2:
                raise _bad(text, f"{which} cell pair {k}: input {inp!r} out of range, node {j} takes inputs "
                                 f"0..{j + 1} (0 = c_{{k-2}}, 1 = c_{{k-1}}, 2.. = earlier nodes)")
            node.append((inp, op))
        if node[0][0] == node[1][0]:
            raise _bad(text, f"{which} cell node {j} takes input {node[0][0]} twice; NB301 nodes take two "
                             f"distinct inputs")
        nodes.append(sorted_node(*node))
    return tuple(nodes)


def _literal(node: ast.AST, text: str, what: str) -> Any:
    # `range(2, 6)` is how DARTS' model_search prints a concat; everything else must be a literal
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords):
        args = [_literal(a, text, what) for a in node.args]
        if not all(isinstance(a, int) for a in args) or not 1 <= len(args) <= 3:
            raise _bad(text, f"{what}: cannot read {ast.unparse(node)}")
        return list(range(*args))
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, RecursionError):
        raise _bad(text, f"{what} is not a literal: {ast.unparse(node)[:200]}") from None


def parse_genotype_text(text: str) -> Arch:
    """`Genotype(normal=[(op, input) x 8], normal_concat=[2, 3, 4, 5], reduce=..., reduce_concat=...)`."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise _bad(text, f"not a Python expression ({e.msg})") from None
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        raise _bad(text, f"not a Python expression ({type(e).__name__})") from None
    func = call.func if isinstance(call, ast.Call) else None
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name != "Genotype":
        raise _bad(text, "expected Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)")
    fields = ("normal", "normal_concat", "reduce", "reduce_concat")
    if len(call.args) > len(fields):
        raise _bad(text, f"Genotype takes {len(fields)} fields, got {len(call.args)} positional arguments")
    values = {f: _literal(a, text, f) for f, a in zip(fields, call.args)}
    for kw in call.keywords:
        if kw.arg not in fields or kw.arg in values:
            raise _bad(text, f"unexpected or repeated Genotype field {kw.arg!r}; fields: {', '.join(fields)}")
        values[kw.arg] = _literal(kw.value, text, kw.arg)
    missing = [f for f in fields if f not in values]
    if missing:
        raise _bad(text, f"Genotype lacks {', '.join(missing)}")
    cells = []
    for which in CELLS:
        concat = values[f"{which}_concat"]
        if not isinstance(concat, (list, tuple, range)) or list(concat) != list(CONCAT):
            raise _bad(text, f"{which}_concat is {concat!r}, must be [2, 3, 4, 5] (NB301 concatenates its 4 "
                             f"intermediate nodes)")
        pairs = values[which]
        if isinstance(pairs, (list, tuple)):
            bad = next((x for x in pairs if not (isinstance(x, (list, tuple)) and len(x) == 2)), None)
            if bad is not None:
                raise _bad(text, f"{which} cell entry {bad!r} is not an (op, input) pair")
            pairs = [(inp, op) for op, inp in pairs]  # DARTS writes (op, input)
        cells.append(_check_cell(pairs, which, text))
    return tuple(cells)


_INT_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_COMPACT_SHAPES = {"[[" + ",".join("P" * 8) + "],[" + ",".join("P" * 8) + "]]",
                   "((" + ",".join("P" * 8) + "),(" + ",".join("P" * 8) + "))"}


def _compact_value(text: str) -> Any:
    # Fast path for the usual shape (a table of 10k strings parses in a fraction of literal_eval's time);
    # anything else goes through literal_eval, which the error messages below describe.
    skeleton = re.sub(r"\s+", "", _INT_PAIR.sub("P", text))
    if skeleton in _COMPACT_SHAPES:
        pairs = [(int(a), int(b)) for a, b in _INT_PAIR.findall(text)]
        return [pairs[:8], pairs[8:]]
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise _bad(text, "not a literal [[(input, op_id) x 8], [(input, op_id) x 8]]") from None


def parse_compact(text: str) -> Arch:
    """NASLib compact `[[(input, op_id) x 8], [(input, op_id) x 8]]` (also the canonical form)."""
    value = _compact_value(text.strip())
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad(text, "compact form needs exactly two cells [normal, reduce]")
    cells = []
    for which, pairs in zip(CELLS, value):
        named = pairs
        if isinstance(pairs, (list, tuple)):
            named = []
            for k, pair in enumerate(pairs):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                    raise _bad(text, f"{which} cell entry {k} {pair!r} is not an (input, op_id) pair")
                inp, op_id = pair
                if not isinstance(op_id, int) or isinstance(op_id, bool) or not 0 <= op_id < len(OPS):
                    raise _bad(text, f"unknown op id {op_id!r} in {which} cell pair {k}; ids 0..{len(OPS) - 1} "
                                     f"index {', '.join(OPS)}")
                named.append((inp, OPS[op_id]))
        cells.append(_check_cell(named, which, text))
    return tuple(cells)


def to_compact(arch: Arch) -> str:
    return str([[(inp, OP_ID[op]) for node in cell for inp, op in node] for cell in arch])


def to_genotype_text(arch: Arch) -> str:
    """The DARTS `Genotype(...)` text of an architecture (pairs in canonical order)."""
    parts = [f"{which}={[(op, inp) for node in cell for inp, op in node]}, {which}_concat={list(CONCAT)}"
             for which, cell in zip(CELLS, arch)]
    return f"Genotype({', '.join(parts)})"


# -- isomorphism -------------------------------------------------------------------------------------

def _cell_key(cell: Cell) -> tuple:
    return tuple(_pair_key(p) for node in cell for p in node)


def canonical_cell(cell: Cell) -> Cell:
    """The smallest renumbering of the intermediate nodes that keeps each node after its inputs."""
    best, best_key = cell, _cell_key(cell)
    for perm in itertools.permutations(range(NUM_NODES)):  # perm[j] = new position of node j
        def moved(i: int) -> int:
            return i if i < 2 else perm[i - 2] + 2
        if any(moved(inp) >= perm[j] + 2 for j, node in enumerate(cell) for inp, _ in node):
            continue
        new: list = [None] * NUM_NODES
        for j, node in enumerate(cell):
            new[perm[j]] = sorted_node(*((moved(inp), op) for inp, op in node))
        key = _cell_key(new)
        if key < best_key:
            best, best_key = tuple(new), key
    return best


def parse_genotype(text: Any) -> Arch:
    """Any of the string forms of the module doc (or an Arch, validated) -> the canonical Arch."""
    if isinstance(text, tuple):  # an Arch already: validate it like any genotype
        try:
            if len(text) == 2:
                return tuple(_check_cell([p for node in cell for p in node], which, text)
                             for which, cell in zip(CELLS, text))
        except (TypeError, ValueError):
            pass
        raise _bad(text, "not a DARTS architecture tuple (normal, reduce), 4 nodes x 2 (input, op) each")
    if not isinstance(text, str):
        raise ArchError(f"DARTS genotype must be a string, got {type(text).__name__}: {text!r}")
    s = text.strip()
    if s.startswith(("[", "(")):
        return parse_compact(s)
    if "Genotype" in s.split("(", 1)[0]:
        return parse_genotype_text(s)
    raise _bad(text, "expected `Genotype(normal=..., ...)` or the compact `[[(input, op_id) x 8], "
                     "[(input, op_id) x 8]]`")
