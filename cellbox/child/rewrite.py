"""Fallback rewrites, used only when a cell's plain compile fails with
"'await' outside async function" (``compiler.py`` decides; this module only transforms).

Exactly two rewrites, nothing else:

- A ``def`` (a function or a method, at any depth) whose *own* body awaits becomes
  ``async def``. Its own body counts ``await``, ``async for``, ``async with`` and async
  comprehensions, but not the bodies of nested ``def``, ``lambda``, ``class`` or generator
  expressions (their decorators, defaults, bases and first iterable run in the enclosing body,
  so those do count). Callers then get a coroutine, as with any ``async def``.
- A zero-argument ``lambda`` whose body awaits becomes an ``async def`` helper named
  ``__cellbox_lambda_<n>``, defined just before the statement that holds the lambda, in the
  same block; the lambda is replaced by the helper's name. Inside a function or class body a
  ``del`` of the helper follows the statement; at module level the executor removes the
  helper names after the cell (a ``del`` after the last statement would hide the cell's value).
  Lambdas inside comprehensions or inside other lambdas are left alone: moving them would change
  which variables they see.

Every new node carries the location of the node it replaces, so line numbers in tracebacks stay
the cell's own. Everything else (``global``, ``del``, augmented assignment, ...) is untouched
module code.
"""

from __future__ import annotations

import ast

HELPER_PREFIX = "__cellbox_lambda_"

_BLOCKS = ("body", "orelse", "finalbody")
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_COMPS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def make_async(tree: ast.Module) -> bool:
    """Apply both rewrites to ``tree`` in place; True iff anything changed."""
    rewriter = _Rewriter()
    tree.body = rewriter.block(tree.body, module_level=True)
    if rewriter.changed:
        ast.fix_missing_locations(tree)
    return rewriter.changed


def awaits(nodes: list[ast.AST]) -> bool:
    """True iff the code in ``nodes`` awaits in its own scope (see the module docstring)."""
    stack: list[ast.AST] = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if isinstance(node, ast.comprehension) and node.is_async:
            return True
        if isinstance(node, _DEFS):
            stack.extend(node.decorator_list)
            stack.extend(_defaults(node.args))
        elif isinstance(node, ast.Lambda):
            stack.extend(_defaults(node.args))
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.decorator_list)
            stack.extend(node.bases)
            stack.extend(k.value for k in node.keywords)
        elif isinstance(node, ast.GeneratorExp):
            stack.append(node.generators[0].iter)
        else:
            stack.extend(ast.iter_child_nodes(node))
    return False


def _defaults(args: ast.arguments) -> list[ast.expr]:
    return [d for d in (*args.defaults, *args.kw_defaults) if d is not None]


class _Rewriter:
    def __init__(self) -> None:
        self.changed = False
        self._count = 0

    def block(self, stmts: list[ast.stmt], *, module_level: bool) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in stmts:
            lifter = _LambdaLifter(self)
            for name, value in ast.iter_fields(stmt):
                if name in _BLOCKS and isinstance(value, list):
                    inner = module_level and not isinstance(stmt, (*_DEFS, ast.ClassDef))
                    setattr(stmt, name, self.block(value, module_level=inner))
                elif name == "handlers":
                    for handler in value:
                        if handler.type is not None:
                            handler.type = lifter.visit(handler.type)
                        handler.body = self.block(handler.body, module_level=module_level)
                elif name == "cases":
                    for case in value:
                        if case.guard is not None:
                            case.guard = lifter.visit(case.guard)
                        case.body = self.block(case.body, module_level=module_level)
                elif isinstance(value, list):
                    setattr(stmt, name, [lifter.visit(v) if isinstance(v, ast.AST) else v
                                         for v in value])
                elif isinstance(value, ast.AST):
                    setattr(stmt, name, lifter.visit(value))
            if isinstance(stmt, ast.FunctionDef) and awaits(stmt.body):
                stmt = _to_async(stmt)
                self.changed = True
            out.extend(lifter.helpers)
            out.append(stmt)
            if lifter.helpers and not module_level:
                names = [ast.Name(id=h.name, ctx=ast.Del()) for h in lifter.helpers]
                out.append(ast.copy_location(ast.Delete(targets=names), stmt))
        return out

    def helper_name(self) -> str:
        self._count += 1
        self.changed = True
        return f"{HELPER_PREFIX}{self._count}"


class _LambdaLifter(ast.NodeTransformer):
    """Replaces awaiting zero-argument lambdas in one statement's own expressions."""

    def __init__(self, rewriter: _Rewriter) -> None:
        self.rewriter = rewriter
        self.helpers: list[ast.AsyncFunctionDef] = []

    def visit_Lambda(self, node: ast.Lambda) -> ast.expr:
        args = node.args
        zero = not (args.posonlyargs or args.args or args.vararg or args.kwonlyargs
                    or args.kwarg)
        if not (zero and awaits([node.body])):
            return node  # its body is another scope: leave it alone
        name = self.rewriter.helper_name()
        ret = ast.copy_location(ast.Return(value=node.body), node.body)
        fields = {"name": name, "args": args, "body": [ret], "decorator_list": [],
                  "returns": None, "type_comment": None}
        if "type_params" in ast.AsyncFunctionDef._fields:
            fields["type_params"] = []
        helper = ast.copy_location(ast.AsyncFunctionDef(**fields), node)
        self.helpers.append(helper)
        return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)

    def _comprehension(self, node: ast.AST) -> ast.AST:
        # Only the first iterable is evaluated in the enclosing scope.
        gen = node.generators[0]  # type: ignore[attr-defined]
        gen.iter = self.visit(gen.iter)
        return node

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


def _to_async(node: ast.FunctionDef) -> ast.AsyncFunctionDef:
    fields = {name: getattr(node, name) for name in node._fields if hasattr(node, name)}
    return ast.copy_location(ast.AsyncFunctionDef(**fields), node)
