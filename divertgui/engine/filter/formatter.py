"""A filter's canonical text, as WinDivertHelperFormatFilter writes it.

The reference formats from its compiled form (program.flatten), not from the
text: it turns the jump table back into and/or/conditional expressions
(`_coalesce_and_or`, then `_coalesce`) and prints those. The same steps are
followed here so that the text is the same, parentheses and all.
"""

from __future__ import annotations

from ..address import Layer
from ..address_text import format_ipv4, format_ipv6
from .ast import Test
from .fields import EVENT_NAMES, FIELDS
from .program import ACCEPT, REJECT, Step

_TERMINAL = (ACCEPT, REJECT)
_FLAG_FIELDS = frozenset({
    "zero", "inbound", "outbound", "fragment", "ip", "ipv6", "icmp", "tcp", "udp", "icmpv6",
    "ip.DF", "ip.MF", "tcp.Urg", "tcp.Ack", "tcp.Psh", "tcp.Rst", "tcp.Syn", "tcp.Fin",
    "loopback", "impostor",
})
_OP_TEXT = {"==": " = ", "!=": " != ", "<": " < ", "<=": " <= ", ">": " > ", ">=": " >= "}


class _Expr:
    """A node while decompiling: a test, and/or, conditional or constant,
    with its jump targets and the number of jumps that reach it."""

    __slots__ = ("kind", "args", "test", "success", "failure", "count")

    def __init__(self, kind, args=(), test=None, success=ACCEPT, failure=REJECT, count=0):
        self.kind, self.args, self.test = kind, args, test
        self.success, self.failure, self.count = success, failure, count


_TRUE = _Expr("true")
_FALSE = _Expr("false")


def format_program(steps: list[Step], layer: Layer) -> str:
    exprs: list[_Expr | None] = [None] * len(steps)
    for i in range(len(steps) - 1, -1, -1):
        step = steps[i]
        exprs[i] = _Expr("test", test=step.test, success=step.success, failure=step.failure)
        for target in (step.success, step.failure):
            if target not in _TERMINAL:
                exprs[target].count += 1
    exprs[0].count += 1
    for i in range(len(steps) - 1, -1, -1):
        _coalesce_and_or(exprs, i)
    expr = _coalesce(exprs, 0)
    if expr is None:
        raise ValueError("the compiled filter does not decompile")
    out: list[str] = []
    _format(expr, layer, True, False, out)
    return "".join(out)


def _deref(exprs, i: int) -> None:
    if i in _TERMINAL:
        return
    exprs[i].count -= 1
    if exprs[i].count == 0:
        exprs[i] = None


def _join(exprs, expr: _Expr, and_: bool, next_index: int, other: int) -> _Expr:
    following = exprs[next_index]
    joined = _Expr("and" if and_ else "or", (expr, following), success=following.success,
                   failure=following.failure, count=expr.count)
    _deref(exprs, next_index)
    _deref(exprs, other)
    return joined


def _coalesce_and_or(exprs, i: int) -> None:
    expr = exprs[i]
    while True:
        if expr is None or expr.count == 0:
            return
        singleton = False
        if expr.success not in _TERMINAL:
            following = exprs[expr.success]
            if following.count == 1:
                singleton = True
                if following.failure == expr.failure:
                    expr = _join(exprs, expr, True, expr.success, expr.failure)
                    continue
                if following.success == expr.failure:
                    new = _Expr("cond", (expr, following, _TRUE), success=following.success,
                                failure=following.failure, count=expr.count)
                    _deref(exprs, expr.success)
                    _deref(exprs, expr.failure)
                    expr = new
                    continue
        if expr.failure in _TERMINAL:
            singleton = False
        else:
            following = exprs[expr.failure]
            if following.count != 1:
                singleton = False
            elif following.success == expr.success:
                expr = _join(exprs, expr, False, expr.failure, expr.success)
                continue
            elif following.failure == expr.success:
                new = _Expr("cond", (expr, _FALSE, following), success=following.success,
                            failure=following.failure, count=expr.count)
                _deref(exprs, expr.success)
                _deref(exprs, expr.failure)
                expr = new
                continue
        if singleton:
            then, otherwise = exprs[expr.success], exprs[expr.failure]
            if then.success != otherwise.success or then.failure != otherwise.failure:
                break
            new = _Expr("cond", (expr, then, otherwise), success=then.success,
                        failure=otherwise.failure, count=expr.count)
            _deref(exprs, expr.success)
            _deref(exprs, expr.failure)
            _deref(exprs, new.success)
            _deref(exprs, new.failure)
            expr = new
            continue
        break
    exprs[i] = expr


def _coalesce(exprs, i: int) -> _Expr | None:
    if i == ACCEPT:
        return _TRUE
    if i == REJECT:
        return _FALSE
    expr = exprs[i]
    if expr is None:
        return None
    if expr.success == expr.failure:
        return _coalesce(exprs, expr.success)
    then = _coalesce(exprs, expr.success)
    otherwise = _coalesce(exprs, expr.failure)
    if then is None or otherwise is None:
        return None
    if then.kind == "true" and otherwise.kind == "false":
        return expr
    return _Expr("cond", (expr, then, otherwise))


def _format(expr: _Expr, layer: Layer, top_level: bool, and_: bool, out: list[str]) -> None:
    kind = expr.kind
    if kind == "and":
        wrap = not top_level and not and_
        out.append("(" if wrap else "")
        _format(expr.args[0], layer, False, True, out)
        out.append(" and ")
        _format(expr.args[1], layer, False, True, out)
        out.append(")" if wrap else "")
    elif kind == "or":
        wrap = not top_level and and_
        out.append("(" if wrap else "")
        _format(expr.args[0], layer, False, False, out)
        out.append(" or ")
        _format(expr.args[1], layer, False, False, out)
        out.append(")" if wrap else "")
    elif kind == "cond":
        out.append("(")
        _format(expr.args[0], layer, True, False, out)
        out.append("? ")
        _format(expr.args[1], layer, True, False, out)
        out.append(": ")
        _format(expr.args[2], layer, True, False, out)
        out.append(")")
    elif kind in ("true", "false"):
        out.append(kind)
    else:
        out.append(test_text(expr.test, layer))


def test_text(test: Test, layer: Layer = Layer.NETWORK) -> str:
    name, value = test.field, test.value
    magnitude = abs(value)
    if name in _FLAG_FIELDS and magnitude <= 1 and test.op in ("==", "!="):
        negated = (magnitude == 0) if test.op == "==" else (magnitude != 0)
        return ("not " if negated else "") + name
    if test.index is not None:
        name = f"{name}[{test.index}b]"
    style = FIELDS[test.field].style
    sign = "-" if value < 0 else ""
    if style == "ipv4":
        text = format_ipv4(magnitude & 0xFFFFFFFF)
    elif style == "addr":
        text = format_ipv6(magnitude)
    elif style == "event":
        text = EVENT_NAMES.get((layer, magnitude), str(magnitude & 0xFFFFFFFF))
    elif style == "layer":
        text = Layer(magnitude).name if magnitude in Layer._value2member_map_ else str(magnitude & 0xFFFFFFFF)
    elif style == "hex":
        # The reference loses the sign of index-field values when it decompiles them.
        sign = "" if test.index is not None else sign
        text = f"0x{magnitude:x}"
    else:
        text = str(magnitude)
    return f"{name}{_OP_TEXT[test.op]}{sign}{text}"
