"""The fast evaluator: closures that mirror cel-python's interpreter node for node (same functions,
values, errors and step counts; tests compare them on generated expressions), for what `check` admits.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import celpy
import celpy.adapter
import celpy.celparser
import celpy.celtypes
import celpy.evaluation
import lark

from fleet.core.cel import checks, cost

# ----------------------------------------------------------------------------------------------------------
# The fast evaluator.
#
# cel-python's interpreter spends most of its time in its own machinery (a lark visitor per node, typing
# casts, activation clones per macro element), ~15 us per node. `_FastCompiler` turns a parse tree into
# nested Python closures once per expression that do what the interpreter does, node for node: the same
# cel-python functions and types on the same values, the same errors (message, position), the same
# evaluation order, and the same step count (each closure counts the nodes the interpreter would visit).
# It refuses (`_Unsupported`, and the program keeps the interpreter) anything outside what `check`
# admits. tests/core/test_cel_fast.py compares both evaluators on generated expressions and clusters.

Fn = Callable[[dict[str, Any], cost.Budget], Any]
CELEvalError = celpy.evaluation.CELEvalError
_BoolType = celpy.celtypes.BoolType
_ListType = celpy.celtypes.ListType
_MapType = celpy.celtypes.MapType
_NameContainer = celpy.evaluation.NameContainer
_MessageType = celpy.celtypes.MessageType


class _Unsupported(Exception):
    """A construct the fast evaluator does not mirror; the interpreter evaluates the expression."""


_BINARY = {
    "relation": {
        "relation_lt": "_<_",
        "relation_le": "_<=_",
        "relation_ge": "_>=_",
        "relation_gt": "_>_",
        "relation_eq": "_==_",
        "relation_ne": "_!=_",
        "relation_in": "_in_",
    },
    "addition": {"addition_add": "_+_", "addition_sub": "_-_"},
    "multiplication": {"multiplication_div": "_/_", "multiplication_mul": "_*_", "multiplication_mod": "_%_"},
}
_UNARY = {"unary_not": "!_", "unary_neg": "-_"}
_INTERPRETER_MACROS = frozenset({"map", "filter", "all", "exists", "exists_one", "reduce", "min"})


def _eval_error(text: str, ex: BaseException, **where: Any) -> CELEvalError:
    value = CELEvalError(text, ex.__class__, ex.args, **where)
    value.__cause__ = ex
    return value


def _seal(n: int, body: Fn) -> Fn:
    """`body`, after counting `n` visits (of the nodes that lead to it without doing anything else)."""
    if n == 0:
        return body

    def sealed(v: dict[str, Any], b: cost.Budget) -> Any:
        left = b.left - n
        b.left = left
        if left <= 0:
            raise cost.Stop("budget")
        if (left + n) >> 6 != left >> 6 and time.monotonic() > b.deadline:
            raise cost.Stop("safety-net")
        return body(v, b)

    return sealed


class FastCompiler:
    def __init__(self, activation: celpy.evaluation.Activation) -> None:
        self.activation = activation
        self.functions = activation.functions
        self.reserved = frozenset(activation.identifiers)  # names the interpreter resolves specially

    def compile(self, tree: lark.Tree, variables: frozenset[str]) -> Fn | None:
        try:
            return self.fn(tree, variables)
        except _Unsupported:
            return None

    def fn(self, tree: Any, scope: frozenset[str]) -> Fn:
        return _seal(*self.node(tree, scope))

    def node(self, tree: Any, scope: frozenset[str]) -> tuple[int, Fn]:
        """(visits to count first, then the closure) for `tree`."""
        if not isinstance(tree, lark.Tree):
            raise _Unsupported(repr(tree))
        kids = tree.children
        data = tree.data
        if data in ("expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication"):
            if len(kids) == 1:
                n, body = self.node(kids[0], scope)
                return n + 1, body
        if (data == "unary" and len(kids) == 1) or data == "member":
            if len(kids) != 1:
                raise _Unsupported(data)
            n, body = self.node(kids[0], scope)
            return n + 1, body
        method = getattr(self, f"_{data}", None)
        if method is None:
            raise _Unsupported(data)
        return cast(tuple[int, Fn], method(tree, scope))

    def _trees(self, kids: Sequence[Any]) -> None:
        if not all(isinstance(k, lark.Tree) for k in kids):
            raise _Unsupported("token")

    def _expr(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        kids = tree.children
        if len(kids) != 3:
            raise _Unsupported("expr")
        self._trees(kids)
        n, cond = self.node(kids[0], scope)  # evaluated first: its visits are counted with this node's
        yes, no = (self.fn(k, scope) for k in kids[1:])
        func = self.functions["_?_:_"]

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            cv = cond(v, b)
            left = right = _BoolType(False)
            try:
                if cv:
                    left = yes(v, b)
                else:
                    right = no(v, b)
                return func(cv, left, right)
            except TypeError as ex:
                text = (
                    f"found no matching overload for _?_:_ "
                    f"applied to '({type(cv)}, {type(left)}, {type(right)})'"
                )
                return _eval_error(text, ex, tree=tree)

        return 1 + n, body

    def _logical(self, tree: lark.Tree, scope: frozenset[str], op: str) -> tuple[int, Fn]:
        kids = tree.children
        if len(kids) != 2:
            raise _Unsupported(tree.data)
        self._trees(kids)
        n, lhs = self.node(kids[0], scope)
        rhs = self.fn(kids[1], scope)
        func = self.functions[op]

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            left = lhs(v, b)
            right = rhs(v, b)
            try:
                return func(left, right)
            except TypeError as ex:
                text = f"found no matching overload for {op} applied to '({type(left)}, {type(right)})'"
                return _eval_error(text, ex, tree=tree)

        return 1 + n, body

    def _conditionalor(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        return self._logical(tree, scope, "_||_")

    def _conditionaland(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        return self._logical(tree, scope, "_&&_")

    def _binary(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        kids = tree.children
        if len(kids) != 2:
            raise _Unsupported(tree.data)
        self._trees(kids)
        op_tree, right_tree = kids
        op_name = _BINARY[tree.data].get(op_tree.data)
        if op_name is None or len(op_tree.children) != 1:
            raise _Unsupported(op_tree.data)
        n, lhs = self.node(op_tree.children[0], scope)
        rhs = self.fn(right_tree, scope)
        func = self.functions[op_name]
        label = op_tree.data
        arithmetic = tree.data != "relation"
        division = tree.data == "multiplication"

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            left = lhs(v, b)
            right = rhs(v, b)
            try:
                return func(left, right)
            except TypeError as ex:
                text = f"found no matching overload for {label!r} applied to '({type(left)}, {type(right)})'"
                return _eval_error(text, ex, tree=tree)
            except ZeroDivisionError as ex:
                if not division:
                    raise
                return _eval_error("modulus or divide by zero", ex, tree=tree)
            except (ValueError, OverflowError) as ex:
                if not arithmetic:
                    raise
                return _eval_error("return error for overflow", ex, tree=tree)

        # The node itself and its operator node (`relation_eq`, ...) are visited before the operands.
        return 2 + n, body

    _relation = _binary
    _addition = _binary
    _multiplication = _binary

    def _unary(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        kids = tree.children
        if len(kids) != 2:
            raise _Unsupported("unary")
        self._trees(kids)
        op_tree, right_tree = kids
        op_name = _UNARY.get(op_tree.data)
        if op_name is None or op_tree.children:
            raise _Unsupported(op_tree.data)
        n, rhs = self.node(right_tree, scope)
        func = self.functions[op_name]
        label = op_tree.data

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            right = rhs(v, b)
            try:
                return func(right)
            except TypeError as ex:
                text = f"found no matching overload for {label!r} applied to '({type(right)})'"
                return _eval_error(text, ex, tree=tree)
            except ValueError as ex:
                return _eval_error("return error for overflow", ex, tree=tree)

        return 2 + n, body

    def _member_dot(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        kids = tree.children
        if len(kids) != 2 or not isinstance(kids[1], lark.Token):
            raise _Unsupported("member_dot")
        n, inner = self.node(kids[0], scope)
        prop = kids[1].value

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            member = inner(v, b)
            if isinstance(member, CELEvalError):
                return member
            if isinstance(member, _NameContainer):
                if prop in member:
                    return member[prop].value
                return CELEvalError(
                    f"No {prop!r} in bindings {sorted(member.keys())}", KeyError, None, tree=tree
                )
            if isinstance(member, _MessageType):
                return member.get(prop)
            if isinstance(member, _MapType):
                try:
                    return member[prop]
                except KeyError:
                    return CELEvalError(f"no such member in mapping: {prop!r}", KeyError, None, tree=tree)
            text = f"{member!r} with type: '{type(member)}' does not support field selection"
            return CELEvalError(text, TypeError, None, tree=tree)

        return 1 + n, body

    def _member_dot_arg(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        kids = tree.children
        if len(kids) not in (2, 3) or not isinstance(kids[1], lark.Token):
            raise _Unsupported("member_dot_arg")
        name = kids[1].value
        if name in _INTERPRETER_MACROS:
            return self._macro(tree, scope, name)
        if name not in self.functions:
            raise _Unsupported(name)
        function = self.functions[name]
        token = kids[1]
        n, inner = self.node(kids[0], scope)
        args = self.fn(kids[2], scope) if len(kids) == 3 else None

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            member = inner(v, b)
            exprlist = args(v, b) if args is not None else None
            if isinstance(member, CELEvalError):
                return member
            if isinstance(exprlist, CELEvalError):
                return exprlist
            try:
                return function(member, *(exprlist or []))
            except ValueError as ex:
                return _eval_error("return error for overflow", ex, token=token)
            except (TypeError, AttributeError) as ex:
                return _eval_error("no such overload", ex, token=token)

        return 1 + n, body

    def _macro(self, tree: lark.Tree, scope: frozenset[str], name: str) -> tuple[int, Fn]:
        kids = tree.children
        if name in ("reduce", "min") or len(kids) != 3:
            raise _Unsupported(name)
        args = kids[2]
        if not isinstance(args, lark.Tree) or len(args.children) != 2:
            raise _Unsupported(name)
        var_tree, expr_tree = args.children
        var = checks.ident_name(var_tree)
        if var is None or var in self.reserved or len(list(var_tree.find_data("ident"))) != 1:
            raise _Unsupported(name)
        n, source = self.node(kids[0], scope)
        each = self.fn(expr_tree, scope | {var})

        if name in ("map", "filter", "exists_one"):

            def body(v: dict[str, Any], b: cost.Budget) -> Any:
                items = source(v, b)
                if isinstance(items, CELEvalError):
                    return items

                def sub(item: Any) -> Any:
                    value = each({**v, var: item}, b)
                    if isinstance(value, CELEvalError):
                        raise value
                    return value

                if name == "map":
                    return _ListType(map(sub, items))
                if name == "filter":
                    return _ListType(filter(sub, items))
                count = sum(1 for item in items if bool(sub(item)))
                return _BoolType(count == 1)

            return 1 + n, body

        combine: Any = celpy.evaluation.eval_error("no such overload", TypeError)(
            celpy.celtypes.logical_and if name == "all" else celpy.celtypes.logical_or
        )
        start = name == "all"

        def short_circuit_body(v: dict[str, Any], b: cost.Budget) -> Any:
            items = source(v, b)
            if isinstance(items, CELEvalError):
                return items

            def sub(item: Any) -> Any:
                try:
                    return each({**v, var: item}, b)
                except CELEvalError as ex:
                    return ex

            return functools.reduce(combine, map(sub, items), _BoolType(start))

        return 1 + n, short_circuit_body

    def _member_index(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        kids = tree.children
        if len(kids) != 2:
            raise _Unsupported("member_index")
        self._trees(kids)
        n, inner = self.node(kids[0], scope)
        index_fn = self.fn(kids[1], scope)
        func = self.functions["_[_]"]

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            member = inner(v, b)
            index = index_fn(v, b)
            try:
                return func(member, index)
            except TypeError as ex:
                text = f"found no matching overload for _[_] applied to '({type(member)}, {type(index)})'"
                return _eval_error(text, ex, tree=tree)
            except KeyError as ex:
                return _eval_error("no such key", ex, tree=tree)
            except IndexError as ex:
                return _eval_error("invalid_argument", ex, tree=tree)

        return 1 + n, body

    def _primary(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        kids = tree.children
        if len(kids) != 1 or not isinstance(kids[0], lark.Tree):
            raise _Unsupported("primary")
        child = kids[0]
        data = child.data
        if data == "literal":
            return 2, self._literal(child)
        if data == "paren_expr":
            if len(child.children) != 1:
                raise _Unsupported("paren_expr")
            n, body = self.node(child.children[0], scope)
            return 1 + n, body
        if data == "list_lit":
            if not child.children:
                return 1, lambda v, b: _ListType()
            if len(child.children) != 1:
                raise _Unsupported("list_lit")
            n, body = self.node(child.children[0], scope)
            return 1 + n, body
        if data == "map_lit":
            if not child.children:
                return 1, lambda v, b: _MapType()
            if len(child.children) != 1:
                raise _Unsupported("map_lit")
            n, inits = self.node(child.children[0], scope)  # counted before the try: same result

            def map_body(v: dict[str, Any], b: cost.Budget) -> Any:
                try:
                    return inits(v, b)
                except (ValueError, TypeError) as ex:
                    return CELEvalError(ex.args[0], ex.__class__, ex.args, tree=tree)

            return 1 + n, map_body
        if data == "ident_arg":
            return 1, self._call(child, scope)
        if data == "ident":
            return 1, self._ident(child, scope)
        raise _Unsupported(data)

    def _literal(self, tree: lark.Tree) -> Fn:
        interpreter = celpy.evaluation.Evaluator(tree, self.activation)
        try:
            value = interpreter.literal(tree)
        except Exception as ex:
            raise _Unsupported("literal") from ex
        if isinstance(value, CELEvalError):
            return lambda v, b: interpreter.literal(tree)
        return lambda v, b: value

    def _ident(self, tree: lark.Tree, scope: frozenset[str]) -> Fn:
        if len(tree.children) != 1 or not isinstance(tree.children[0], lark.Token):
            raise _Unsupported("ident")
        name = tree.children[0].value
        if name in self.reserved:
            raise _Unsupported(name)
        if name in scope:
            return lambda v, b: v[name]
        if name in self.functions:
            value = self.functions[name]
            return lambda v, b: value
        raise _Unsupported(name)  # an undeclared reference: the interpreter says so

    def _call(self, tree: lark.Tree, scope: frozenset[str]) -> Fn:
        kids = tree.children
        if not kids or not isinstance(kids[0], lark.Token) or len(kids) > 2:
            raise _Unsupported("ident_arg")
        token = kids[0]
        name = token.value
        exprs: list[Any] = []
        if len(kids) == 2:
            if not isinstance(kids[1], lark.Tree) or kids[1].data != "exprlist":
                raise _Unsupported("ident_arg")
            exprs = list(kids[1].children)
        args = [self.fn(e, scope) for e in exprs]
        if name == "has":
            if not args:
                raise _Unsupported("has")

            def has_body(v: dict[str, Any], b: cost.Budget) -> Any:
                values = [a(v, b) for a in args]
                return _BoolType(not isinstance(values[0], CELEvalError))

            return has_body
        if name == "dyn":
            if not args:
                raise _Unsupported("dyn")

            def dyn_body(v: dict[str, Any], b: cost.Budget) -> Any:
                values = [a(v, b) for a in args]
                return values[0]

            return dyn_body
        if name not in self.functions:
            raise _Unsupported(name)
        function = self.functions[name]

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            values = [a(v, b) for a in args]
            for value in values:
                if isinstance(value, CELEvalError):
                    return value
            try:
                return function(*values)
            except ValueError as ex:
                return _eval_error("return error for overflow", ex, token=token)
            except (TypeError, AttributeError) as ex:
                return _eval_error("no such overload", ex, token=token)

        return body

    def _exprlist(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        args = [self.fn(e, scope) for e in tree.children]

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            values = [a(v, b) for a in args]
            for value in values:
                if isinstance(value, CELEvalError):
                    return value
            return _ListType(values)

        return 1, body

    def _mapinits(self, tree: lark.Tree, scope: frozenset[str]) -> tuple[int, Fn]:
        args = [self.fn(e, scope) for e in tree.children]

        def body(v: dict[str, Any], b: cost.Budget) -> Any:
            result = _MapType()
            values = [a(v, b) for a in args]
            for key, value in zip(values[0::2], values[1::2], strict=False):
                if key in result:
                    raise ValueError(f"Duplicate key {key!r}")
                result[key] = value
            return result

        return 1, body
