"""Safe reward expressions: parsed with :mod:`ast`, checked against a whitelist, evaluated with numpy.

Nothing is ever passed to ``eval``/``exec``. An expression may use numbers, the variable names of
the spec (see :meth:`TelemetrySpec.expression_variables`), tag names in their place (see
:meth:`TelemetrySpec.expression_aliases`: ``TIC101.PV`` unquoted when it reads as a dotted name,
any tag in quotes, ``"TI-101.PV"``, with the ``next_``/``prev_``/``delta_`` prefix inside the
quotes), the operators ``+ - * / // % **``,
comparisons (giving 1.0 / 0.0), ``and`` / ``or`` / ``not``, ``a if cond else b`` and the functions
in :data:`FUNCTIONS`. Attribute access, subscripts, any other call, lambdas, comprehensions,
strings and dunder names are rejected when the spec is loaded, with a message naming the construct.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dime_offline.errors import ConfigError

Evaluator = Callable[[Mapping[str, np.ndarray]], np.ndarray]

MAX_EXPRESSION_CHARS = 2000


def _min(*args: np.ndarray) -> np.ndarray:
    out = args[0]
    for a in args[1:]:
        out = np.minimum(out, a)
    return out


def _max(*args: np.ndarray) -> np.ndarray:
    out = args[0]
    for a in args[1:]:
        out = np.maximum(out, a)
    return out


FUNCTIONS: dict[str, tuple[Callable[..., np.ndarray], int, int]] = {
    # name: (function, min args, max args)
    "abs": (np.abs, 1, 1),
    "sqrt": (np.sqrt, 1, 1),
    "exp": (np.exp, 1, 1),
    "log": (np.log, 1, 1),
    "sign": (np.sign, 1, 1),
    "min": (_min, 2, 8),
    "max": (_max, 2, 8),
    "clip": (np.clip, 3, 3),
}
"""Element-wise functions an expression may call (and nothing else)."""

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
    ast.Eq: np.equal, ast.NotEq: np.not_equal,
}
_REJECTED = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignments",
    ast.Starred: "star arguments",
    ast.List: "lists", ast.Tuple: "tuples", ast.Dict: "dicts", ast.Set: "sets",
    ast.JoinedStr: "strings", ast.FormattedValue: "strings",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Slice: "subscripts",
}


def parse_expression(
    text: str, variables: Sequence[str], *, aliases: Mapping[str, str] | None = None, where: str = "reward.expression",
) -> Evaluator:
    """Check ``text`` and return a vectorised evaluator over the given variable names.

    ``aliases`` maps other spellings (tag names, possibly dotted or with dashes) to variable names.

    Raises:
        ConfigError: naming ``where`` and the rejected construct or unknown name.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"field '{where}': empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ConfigError(f"field '{where}': expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"field '{where}': not a valid expression ({exc.msg} at column {exc.offset})") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"field '{where}': expression is nested too deeply") from None
    known = {name: name for name in variables}
    known.update({k: v for k, v in (aliases or {}).items() if v in known})
    try:
        return _compile(tree.body, known, where)
    except RecursionError:
        raise ConfigError(f"field '{where}': expression is nested too deeply") from None


def _reject(node: ast.AST, where: str, what: str) -> ConfigError:
    col = getattr(node, "col_offset", None)
    at = f" at column {col + 1}" if col is not None else ""
    return ConfigError(f"field '{where}': {what} not allowed in reward expressions{at}")


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of plain names, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _variable(name: str, known: dict[str, str]) -> Evaluator:
    target = known[name]
    return lambda env: env[target]


def _compile(node: ast.AST, known: dict[str, str], where: str) -> Evaluator:
    if isinstance(node, ast.Attribute):
        dotted = _dotted(node)
        if dotted is not None and dotted in known:
            return _variable(dotted, known)
        head = dotted.split(".")[0] if dotted is not None else None
        if dotted is not None and head not in known and head not in FUNCTIONS and "__" not in dotted:
            raise ConfigError(
                f"field '{where}': unknown tag '{dotted}' (attribute access is not allowed; a dotted tag name"
                " works when the spec reads that tag; quote other tag names: \"TI-101.PV\")"
            )
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value.strip() in known:
            return _variable(node.value.strip(), known)
        raise ConfigError(
            f"field '{where}': the constant {node.value!r} is not a tag the spec reads (quoted text names a tag or"
            " feature, optionally with a next_/prev_/delta_ prefix inside the quotes)"
        )
    if type(node) in _REJECTED:
        construct = _REJECTED[type(node)]
        raise _reject(node, where, construct + (" is" if construct in ("attribute access", "await", "yield") else " are"))
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _reject(node, where, f"the constant {node.value!r} is")
        value = float(node.value)
        return lambda env: np.float64(value)
    if isinstance(node, ast.Name):
        name = node.id
        if name.startswith("__"):
            raise _reject(node, where, f"the dunder name '{name}' is")
        if name in FUNCTIONS:
            raise _reject(node, where, f"the function '{name}' without a call is")
        if name not in known:
            listed = ", ".join(sorted(set(known.values()))[:40])
            raise ConfigError(f"field '{where}': unknown name '{name}' (available: {listed})")
        return _variable(name, known)
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise _reject(node, where, f"the operator {type(node.op).__name__} is")
        left, right = _compile(node.left, known, where), _compile(node.right, known, where)
        return lambda env: op(left(env), right(env))
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand, known, where)
        if isinstance(node.op, ast.USub):
            return lambda env: -operand(env)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            return lambda env: (np.asarray(operand(env)) == 0).astype(np.float64)
        raise _reject(node, where, f"the operator {type(node.op).__name__} is")
    if isinstance(node, ast.Compare):
        parts = [_compile(node.left, known, where)] + [_compile(c, known, where) for c in node.comparators]
        ops = []
        for op_node in node.ops:
            fn = _COMPARE.get(type(op_node))
            if fn is None:
                raise _reject(node, where, f"the comparison {type(op_node).__name__} is")
            ops.append(fn)

        def compare(env: Mapping[str, np.ndarray]) -> np.ndarray:
            values = [p(env) for p in parts]
            result = np.ones(np.broadcast(*values).shape, dtype=bool)
            for fn, a, b in zip(ops, values[:-1], values[1:]):
                result &= fn(a, b)
            return result.astype(np.float64)

        return compare
    if isinstance(node, ast.BoolOp):
        items = [_compile(v, known, where) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

        def boolop(env: Mapping[str, np.ndarray]) -> np.ndarray:
            out = np.asarray(items[0](env)) != 0
            for item in items[1:]:
                out = combine(out, np.asarray(item(env)) != 0)
            return out.astype(np.float64)

        return boolop
    if isinstance(node, ast.IfExp):
        test, body, orelse = (_compile(n, known, where) for n in (node.test, node.body, node.orelse))
        return lambda env: np.where(np.asarray(test(env)) != 0, body(env), orelse(env))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            what = "attribute access is" if isinstance(node.func, ast.Attribute) else "calling an expression is"
            raise _reject(node, where, what)
        fname = node.func.id
        if fname not in FUNCTIONS:
            raise _reject(node, where, f"calling '{fname}' is (allowed functions: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise _reject(node, where, "keyword arguments are")
        fn, lo, hi = FUNCTIONS[fname]
        if not lo <= len(node.args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise ConfigError(f"field '{where}': {fname}() takes {want} argument(s), got {len(node.args)}")
        args = [_compile(a, known, where) for a in node.args]
        return lambda env: fn(*(a(env) for a in args))
    raise _reject(node, where, f"{type(node).__name__} is")


def evaluate_reward(evaluator: Evaluator, variables: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Run an expression (or a user function) and return (n,) float64 rewards, shape-checked."""
    with np.errstate(all="ignore"):
        out = np.asarray(evaluator(variables), dtype=np.float64)
    if out.ndim == 0:
        out = np.full(n, float(out))
    if out.shape != (n,):
        raise ConfigError(f"field 'reward': expected {n} rewards, got an array of shape {out.shape}")
    return out
