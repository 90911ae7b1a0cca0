"""NAS-Bench-101 cells as plain data: validation, pruning, the benchmark's graph hash, text forms.

A cell is a DAG of at most 7 vertices in topological order: vertex 0 is the input, the last vertex the
output, every other vertex one op of OPS; an edge i -> j (i < j) feeds i's tensor into j. `Cell` holds
the *pruned* cell (NAS-Bench-101's `ModelSpec.matrix` / `.ops`): vertices on no input -> output path are
dropped and the rest renumbered in order, since they cannot change the output. Validity is NAS-Bench-101's
`is_valid`, judged on the pruned cell: the output reachable from the input, at most 7 vertices, at most 9
edges, the first vertex `input`, the last `output`. This module is stricter in one way: an unknown op is
an error even on a dangling vertex (a typo, not a cell of the space).

Text forms (`parse_cell`):
- canonical (`cell_to_str`): interior ops (short names), `|`, edges `src>dst`, vertices numbered 0 (input),
  1..k (the ops in order), k+1 (output); e.g. `conv3x3,maxpool3x3,conv1x1|0>1,0>2,1>3,2>3,3>4`; a cell with no
  interior vertex is `|0>1`. Full op names (`conv3x3-bn-relu`) are accepted too.
- NASLib key: the string of a tuple of n*n + n ints, the row-major n x n adjacency then n op ids indexing
  NASLIB_OPS. NASLib pads cells with fewer than 7 vertices to 7 (`convert_to_cell`): extra `conv3x3-bn-relu`
  vertices without edges before the output, so its keys have 56 ints; pruning removes the padding.
- JSON: `{"matrix": [[0, 1, ...], ...], "ops": ["input", ..., "output"]}`; ops may be names or the ids of the
  nasbench-vis file (VIS_OPS: -1 input, -2 output, 0 conv3x3, 1 conv1x1, 2 maxpool, -3 a padding vertex,
  which must have no edges and is dropped wherever it stands).

`cell_hash` is NAS-Bench-101's `graph_util.hash_module` (the dataset's module hash): every vertex starts as
md5 of (out-degree, in-degree, label) and is re-hashed n times from its sorted in- and out-neighbour hashes;
the cell's hash is md5 of the sorted vertex hashes. Isomorphic cells get one hash (it is a Weisfeiler-Lehman
style invariant, so in principle two non-isomorphic cells could collide; NAS-Bench-101 keys its data by it).
"""
from __future__ import annotations

import ast
import hashlib
import json
from typing import Any, NamedTuple, Sequence

from pipeline.errors import ArchError

INPUT, OUTPUT = "input", "output"
# NAS-Bench-101's `available_ops`, in its order: the hash labels them 0, 1, 2 (input -1, output -2).
OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
KERNEL = {"conv3x3-bn-relu": 3, "conv1x1-bn-relu": 1}  # conv side of each conv op
SHORT = {"conv3x3-bn-relu": "conv3x3", "conv1x1-bn-relu": "conv1x1", "maxpool3x3": "maxpool3x3"}
_BY_NAME = {**{op: op for op in OPS}, **{s: op for op, s in SHORT.items()}, INPUT: INPUT, OUTPUT: OUTPUT}
NASLIB_OPS = (INPUT, OUTPUT, "maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu")
PADDING = "<padding>"
VIS_OPS = {-1: INPUT, -2: OUTPUT, 0: OPS[0], 1: OPS[1], 2: OPS[2], -3: PADDING}
MAX_VERTICES = 7
MAX_EDGES = 9


class Cell(NamedTuple):
    """A pruned, valid NAS-Bench-101 cell: ops (full names, input first, output last) and sorted edges."""

    ops: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    def matrix(self) -> list[list[int]]:
        n = len(self.ops)
        m = [[0] * n for _ in range(n)]
        for s, d in self.edges:
            m[s][d] = 1
        return m


def _fail(text: Any, problem: str) -> ArchError:
    return ArchError(f"NB101 cell {text!r}: {problem}")


def _find_cycle(n: int, edges: Sequence[tuple[int, int]]) -> list[int] | None:
    succ: list[list[int]] = [[] for _ in range(n)]
    for s, d in edges:
        succ[s].append(d)
    state = [0] * n  # 0 new, 1 on the stack, 2 done
    stack: list[int] = []

    def visit(v: int) -> list[int] | None:
        state[v] = 1
        stack.append(v)
        for w in succ[v]:
            if state[w] == 1:
                return stack[stack.index(w):] + [w]
            if state[w] == 0 and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in range(n):
        if state[v] == 0 and (found := visit(v)):
            return found
    return None


def make_cell(ops: Sequence[Any], edges: Sequence[tuple[int, int]], text: Any) -> Cell:
    """Validate a cell given as ops (names or PADDING) and edges between vertex indices, prune it.

    `text` is what the user wrote, for the error messages.
    """
    n = len(ops)
    edges = sorted(set((int(s), int(d)) for s, d in edges))
    for v, op in enumerate(ops):
        if op != PADDING and op not in _BY_NAME:
            raise _fail(text, f"unknown op {op!r} at vertex {v}; ops: {', '.join(OPS)} "
                              f"(short: {', '.join(SHORT.values())}), plus input and output")
    pads = {v for v, op in enumerate(ops) if op == PADDING}
    for s, d in edges:
        if s in pads or d in pads:
            raise _fail(text, f"padding vertex {s if s in pads else d} has edge {s}>{d}; padding vertices "
                              "have no edges")
    backward = [(s, d) for s, d in edges if s >= d]
    if backward:
        cycle = _find_cycle(n, edges)
        if cycle:
            raise _fail(text, f"cycle {'>'.join(map(str, cycle))}: a cell is acyclic")
        s, d = backward[0]
        raise _fail(text, f"edge {s}>{d} does not go forward: the adjacency must be upper-triangular "
                          "(vertices in topological order)")
    keep = [v for v in range(n) if v not in pads]
    renum = {v: i for i, v in enumerate(keep)}
    names = [_BY_NAME[ops[v]] for v in keep]
    edges = [(renum[s], renum[d]) for s, d in edges]
    n = len(names)
    if n < 2:
        raise _fail(text, f"{n} vertices; a cell needs at least an input and an output")
    if names[0] != INPUT:
        raise _fail(text, f"the first vertex must be 'input', got {names[0]!r}")
    if names[-1] != OUTPUT:
        raise _fail(text, f"the last vertex must be 'output', got {names[-1]!r}")
    for v in range(1, n - 1):
        if names[v] in (INPUT, OUTPUT):
            raise _fail(text, f"vertex {v} is {names[v]!r}; only the first / last vertex may be")
    return _prune(names, edges, text)


def _prune(names: list[str], edges: list[tuple[int, int]], text: Any) -> Cell:
    """NAS-Bench-101's ModelSpec._prune: keep the vertices reachable from the input and reaching the
    output, renumbered in order; then its is_valid limits on what is left."""
    n = len(names)
    from_in = {0}
    for s, d in edges:  # sorted by src: topological
        if s in from_in:
            from_in.add(d)
    to_out = {n - 1}
    for s, d in sorted(edges, key=lambda e: -e[1]):
        if d in to_out:
            to_out.add(s)
    if n - 1 not in from_in:
        raise _fail(text, "the output is unreachable from the input")
    keep = sorted(from_in & to_out)
    renum = {v: i for i, v in enumerate(keep)}
    kept_edges = tuple(sorted((renum[s], renum[d]) for s, d in edges if s in renum and d in renum))
    if len(keep) > MAX_VERTICES:
        raise _fail(text, f"{len(keep)} vertices on input->output paths; at most {MAX_VERTICES}")
    if len(kept_edges) > MAX_EDGES:
        raise _fail(text, f"{len(kept_edges)} edges on input->output paths; at most {MAX_EDGES}")
    return Cell(tuple(names[v] for v in keep), kept_edges)


# -- text forms --------------------------------------------------------------------------------------

def cell_to_str(cell: Cell) -> str:
    ops = ",".join(SHORT[op] for op in cell.ops[1:-1])
    return ops + "|" + ",".join(f"{s}>{d}" for s, d in cell.edges)


def cell_to_json(cell: Cell) -> str:
    """The JSON form (full op names), what table converters write and `parse_cell` reads back."""
    return json.dumps({"matrix": cell.matrix(), "ops": list(cell.ops)}, separators=(",", ":"))


def _parse_canonical(s: str, text: Any) -> Cell:
    if s.count("|") != 1:
        raise _fail(text, "malformed: expected 'op,op,...|src>dst,...' (e.g. 'conv3x3,maxpool3x3|0>1,1>2,2>3'), "
                          "a NASLib tuple '(...)' or a JSON object '{\"matrix\": ..., \"ops\": ...}'")
    ops_part, edges_part = (p.strip() for p in s.split("|"))
    inner = [o.strip() for o in ops_part.split(",")] if ops_part else []
    n = len(inner) + 2
    edges = []
    for item in (e.strip() for e in edges_part.split(",") if e.strip()):
        src, sep, dst = item.partition(">")
        if not sep or not src.strip().isdigit() or not dst.strip().isdigit():
            raise _fail(text, f"malformed edge {item!r}: expected 'src>dst' with vertex numbers")
        s, d = int(src), int(dst)
        if not (s < n and d < n):
            raise _fail(text, f"edge {item!r} names a vertex beyond the {n} vertices (0 = input, {n - 1} = output)")
        edges.append((s, d))
    return make_cell([INPUT, *inner, OUTPUT], edges, text)


def _matrix_edges(matrix: Any, n_ops: int, text: Any) -> list[tuple[int, int]]:
    if not (isinstance(matrix, (list, tuple)) and all(isinstance(r, (list, tuple)) for r in matrix)):
        raise _fail(text, "the matrix must be a list of rows")
    n = len(matrix)
    if any(len(r) != n for r in matrix):
        raise _fail(text, f"the matrix must be square, got rows of lengths {[len(r) for r in matrix]}")
    if n != n_ops:
        raise _fail(text, f"{n}x{n} matrix but {n_ops} ops: one op per vertex")
    edges = []
    for i, row in enumerate(matrix):
        for j, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x not in (0, 1):
                raise _fail(text, f"matrix entry [{i}][{j}] is {x!r}; entries are 0 or 1")
            if x:
                edges.append((i, j))
    return edges


def _parse_naslib(s: str, text: Any) -> Cell:
    try:
        values = ast.literal_eval(s)
    except (ValueError, SyntaxError):
        raise _fail(text, "malformed NASLib tuple") from None
    if not (isinstance(values, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        raise _fail(text, "a NASLib key is a tuple of ints")
    n = 0
    while n * n + n < len(values):
        n += 1
    if n * n + n != len(values):
        raise _fail(text, f"a NASLib key holds n*n adjacency entries + n op ids (56 for 7 vertices), "
                          f"got {len(values)} ints")
    ids = values[n * n:]
    bad = [i for i in ids if not 0 <= i < len(NASLIB_OPS)]
    if bad:
        raise _fail(text, f"NASLib op id {bad[0]} out of range 0..{len(NASLIB_OPS) - 1} "
                          f"({', '.join(NASLIB_OPS)})")
    matrix = [list(values[i * n:(i + 1) * n]) for i in range(n)]
    return make_cell([NASLIB_OPS[i] for i in ids], _matrix_edges(matrix, n, text), text)


def _parse_json(s: str, text: Any) -> Cell:
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        raise _fail(text, f"malformed JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(obj, dict) or "matrix" not in obj or "ops" not in obj:
        raise _fail(text, "the JSON form is an object with 'matrix' and 'ops'")
    ops = obj["ops"]
    if not isinstance(ops, list):
        raise _fail(text, "'ops' must be a list")
    names = []
    for v, op in enumerate(ops):
        if isinstance(op, int) and not isinstance(op, bool):
            if op not in VIS_OPS:
                raise _fail(text, f"unknown op id {op} at vertex {v}; ids: "
                                  + ", ".join(f"{k} {n}" for k, n in VIS_OPS.items()))
            names.append(VIS_OPS[op])
        elif isinstance(op, str):
            names.append(op)
        else:
            raise _fail(text, f"op at vertex {v} is {op!r}; ops are names or int ids")
    return make_cell(names, _matrix_edges(obj["matrix"], len(names), text), text)


def parse_cell(text: Any) -> Cell:
    """Any of the text forms above (or a Cell) -> the validated, pruned Cell."""
    if isinstance(text, Cell):
        return make_cell(text.ops, text.edges, text)
    if not isinstance(text, str):
        raise _fail(text, f"expected a string, got {type(text).__name__}")
    s = text.strip()
    if s.startswith("("):
        return _parse_naslib(s, text)
    if s.startswith("{"):
        return _parse_json(s, text)
    return _parse_canonical(s, text)


# -- the benchmark's graph hash ----------------------------------------------------------------------

def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def cell_hash(cell: Cell) -> str:
    """NAS-Bench-101's module hash of a pruned cell (see the module doc)."""
    n = len(cell.ops)
    labels = [-1] + [OPS.index(op) for op in cell.ops[1:-1]] + [-2]
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for s, d in cell.edges:
        succs[s].append(d)
        preds[d].append(s)
    # str() of a tuple of Python ints, as nasbench hashes (out_degree, in_degree, label)
    hashes = [_md5(str((len(succs[v]), len(preds[v]), labels[v]))) for v in range(n)]
    for _ in range(n):
        hashes = [_md5("".join(sorted(hashes[w] for w in preds[v])) + "|"
                       + "".join(sorted(hashes[w] for w in succs[v])) + "|" + hashes[v]) for v in range(n)]
    return _md5(str(sorted(hashes)))


# -- per-vertex channels of the benchmark network -----------------------------------------------------

def vertex_channels(cell: Cell, in_channels: int, out_channels: int) -> list[int]:
    """Channels of each vertex when the cell maps in_channels to out_channels (nasbench's
    `compute_vertex_channels`): the output's channels are split as evenly as possible over the vertices
    that feed it (the first ones get the remainder), and every other interior vertex takes the largest
    channel count among the interior vertices it feeds."""
    n = len(cell.ops)
    ch = [0] * n
    ch[0], ch[n - 1] = in_channels, out_channels
    if n == 2:
        return ch
    feeds_out = [v for v in range(1, n - 1) if (v, n - 1) in cell.edges]
    base, extra = divmod(out_channels, len(feeds_out))
    if base == 0:
        raise ValueError(f"{out_channels} output channels cannot be split over the {len(feeds_out)} vertices "
                         f"feeding the output of {cell_to_str(cell)!r}")
    for i, v in enumerate(feeds_out):
        ch[v] = base + (1 if i < extra else 0)
    succ = {v: [d for s, d in cell.edges if s == v and d < n - 1] for v in range(n)}
    for v in range(n - 2, 0, -1):
        if v not in feeds_out:
            ch[v] = max(ch[d] for d in succ[v])
    return ch
