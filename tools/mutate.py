"""Mutation testing for bnn-tune: single plausible edits, one at a time, each judged by the tests that cover it.

Run it with ``make mutation`` (see TESTING.md) or directly::

    python tools/mutate.py run [--module plugins/_collapse.py ...] [--shard 1/4] [--sample 0.5] [--budget 1800]
    python tools/mutate.py list [--module ...]          # the mutants, their ids and edits, nothing run
    python tools/mutate.py show ID                      # the diff of one mutant
    python tools/mutate.py report                       # rewrite the report from the results file

How it works:

* ``tools/mutation.toml`` lists the modules in scope and, per module, the test files that cover it (only
  those run for its mutants; ``-x``, the default markers, a per-mutant timeout from the measured
  unmutated time of the same test files).
* The mutants come from Python's ``ast``: ``<`` vs ``<=`` (and ``>``/``>=``, ``==``/``!=``, ``is``/
  ``is not``, ``in``/``not in``), ``+``/``-``, ``*``/``/``, ``and``/``or``, a dropped ``not`` or unary
  minus, ``max``/``min`` (and ``.max``/``.min``, ``maximum``/``minimum``, ``argmax``/``argmin``), an int
  constant + 1, a float constant doubled (0.0 -> 1.0), ``True``/``False``, index ``[0]`` vs ``[-1]``, the
  two branches of ``a if c else b`` swapped, a bare condition negated. Each edit replaces only the source
  text of the node it changes, so the mutant keeps the file's layout and line numbers. Docstrings,
  strings, f-strings, annotations, ``raise``/``logger``/``warnings.warn`` arguments, ``__all__`` and
  lines marked ``# pragma: no mutate`` are never mutated.
* A mutant's id is a hash of the file, the enclosing function, the kind of edit, the original text, the
  new text and its rank among identical edits in that function: it survives edits elsewhere in the file,
  so ``tools/mutation_equivalents.toml`` can name the equivalent mutants (with the reason) for good.
* The source tree is copied to a temporary directory once per run and only the copy is mutated (the file
  is restored in ``finally`` after each mutant and the copy removed at the end): a run never leaves a
  mutated file in the checkout and can run beside normal work. No bytecode is written (a stale ``.pyc``
  with the same size and mtime second would hide a mutant). Each mutant runs in a forked child that
  already imported torch/numpy/optuna/pytest (``--no-fork``: a fresh interpreter per mutant), in its own
  process group, killed on timeout.
* Results are appended to ``runs/mutation/results.jsonl`` (one line per mutant run); a rerun skips a
  mutant already killed while the module's source is unchanged, and one already judged while both the
  module and its test files are unchanged, so a run stopped by ``--budget`` or Ctrl-C resumes where it
  stopped and pieces (``--shard i/n``) add up. ``report`` writes ``runs/mutation/REPORT.md``.

Native code: the module table takes any file; today only ``.py`` files have a mutator (``MUTATORS``). A C
mutator for ``bnn_tune/kernels/csrc/*.c`` plugs in there: the compiled CPU kernels are cached under
``$BNN_TUNE_CACHE`` keyed by a hash of the source (``bnn_tune/kernels/_native.py``), so a mutated source
is rebuilt; the runner points ``BNN_TUNE_CACHE`` at the run's temporary directory so mutant libraries
never land in the user's cache.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tools" / "mutation.toml"
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.toml"
OUT = ROOT / "runs" / "mutation"
STATUSES = ("killed", "timeout", "survived", "error")


# ------------------------------------------------------------------------------------------ mutants
@dataclass(frozen=True)
class Mutant:
    id: str
    path: str  # relative to the repository root
    line: int
    scope: str  # enclosing class/function, dotted
    kind: str
    before: str  # the replaced source text
    after: str
    start: int  # byte offsets of the replaced text
    end: int

    def describe(self) -> str:
        b, a = (" ".join(s.split()) for s in (self.before, self.after))
        if len(b) > 70:
            b, a = b[:67] + "...", a[:67] + "..."
        return f"{self.path}:{self.line} [{self.kind}] `{b}` -> `{a}`"

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.after.encode() + source[self.end:]


CMP_SWAP = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "==",
            ast.Is: "is not", ast.IsNot: "is", ast.In: "not in", ast.NotIn: "in"}
CMP_TOKEN = {ast.Lt: r"<(?!=)", ast.LtE: r"<=", ast.Gt: r">(?!=)", ast.GtE: r">=", ast.Eq: r"==",
             ast.NotEq: r"!=", ast.Is: r"\bis\b(?!\s+not\b)", ast.IsNot: r"\bis\s+not\b",
             ast.In: r"(?<!not )\bin\b", ast.NotIn: r"\bnot\s+in\b"}
BIN_SWAP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*")}
NAME_SWAP = {"max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum", "amax": "amin",
             "amin": "amax", "argmax": "argmin", "argmin": "argmax"}
SKIP_CALLS = re.compile(r"^(logger|logging|log|warnings)\.|^(print|repr|str|format)$")
NO_MUTATE = "pragma: no mutate"


class _Collector(ast.NodeVisitor):
    """Walks one module and records every candidate edit as (node-derived byte span, kind, new text)."""

    def __init__(self, path: str, source: bytes) -> None:
        self.path, self.src = path, source
        self.lines = source.splitlines(keepends=True)
        self.offsets = [0]
        for ln in self.lines:
            self.offsets.append(self.offsets[-1] + len(ln))
        self.scope: list[str] = []
        self.raw: list[tuple[int, str, str, int, int, str]] = []  # line, scope, kind, start, end, after
        self.skip_lines = {i + 1 for i, ln in enumerate(self.lines) if NO_MUTATE.encode() in ln}

    # -- positions
    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offsets[node.lineno - 1] + node.col_offset,  # type: ignore[attr-defined]
                self.offsets[node.end_lineno - 1] + node.end_col_offset)  # type: ignore[attr-defined]

    def text(self, node: ast.AST) -> str:
        s, e = self.span(node)
        return self.src[s:e].decode()

    def add(self, node: ast.AST, kind: str, start: int, end: int, after: str) -> None:
        if node.lineno in self.skip_lines:  # type: ignore[attr-defined]
            return
        self.raw.append((node.lineno, ".".join(self.scope) or "<module>", kind, start, end, after))  # type: ignore[attr-defined]

    def token_between(self, node: ast.AST, left: ast.AST, right: ast.AST, pattern: str, kind: str, new: str) -> None:
        s, _ = self.span(left)
        _, ls = self.span(left)
        rs, _ = self.span(right)
        gap = self.src[ls:rs].decode()
        m = re.search(pattern, gap.split("#")[0])
        if m:
            start = ls + len(gap[: m.start()].encode())
            self.add(node, kind, start, start + len(m.group().encode()), new)

    # -- scopes and skipped regions
    def _scoped(self, node: ast.AST, name: str) -> None:
        self.scope.append(name)  # decorators are not mutated (dataclass flags, registrations)
        body = list(node.body)  # type: ignore[attr-defined]
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # docstring
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                self.visit(d)
        for stmt in body:
            self.visit(stmt)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name)

    def visit_Module(self, node: ast.Module) -> None:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        for stmt in body:
            self.visit(stmt)

    def visit_Import(self, node: ast.AST) -> None:
        return

    visit_ImportFrom = visit_Import
    visit_JoinedStr = visit_Import  # f-strings: messages

    def visit_Raise(self, node: ast.Raise) -> None:
        return  # the message; the condition that raises is mutated where it is tested

    def visit_Assert(self, node: ast.Assert) -> None:
        self.visit(node.test)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        t = node.test
        if isinstance(t, ast.Name) and t.id == "TYPE_CHECKING":
            return
        if isinstance(t, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
            s, e = self.span(t)
            self.add(t, "negate-condition", s, e, f"not ({self.text(t)})")
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self.visit_If(node)  # type: ignore[arg-type]

    def visit_Call(self, node: ast.Call) -> None:
        func = ast.unparse(node.func)
        if SKIP_CALLS.search(func):
            return
        if isinstance(node.func, ast.Name) and node.func.id in NAME_SWAP:
            s, e = self.span(node.func)
            self.add(node.func, "max-min", s, e, NAME_SWAP[node.func.id])
        elif isinstance(node.func, ast.Attribute) and node.func.attr in NAME_SWAP:
            _, e = self.span(node.func)
            self.add(node.func, "max-min", e - len(node.func.attr), e, NAME_SWAP[node.func.attr])
        self.visit(node.func)
        for a in node.args:
            self.visit(a)
        for k in node.keywords:
            if k.arg != "stacklevel":
                self.visit(k.value)

    # -- the edits
    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            self.token_between(node, operands[i], operands[i + 1], CMP_TOKEN[type(op)], "compare", CMP_SWAP[type(op)])
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        strings = any(isinstance(x, ast.JoinedStr) or (isinstance(x, ast.Constant) and isinstance(x.value, str))
                      for x in (node.left, node.right))
        if type(node.op) in BIN_SWAP and not strings:
            old, new = BIN_SWAP[type(node.op)]
            self.token_between(node, node.left, node.right, re.escape(old) + r"(?![=*/])", "arith", new)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if type(node.op) in BIN_SWAP:
            old, new = BIN_SWAP[type(node.op)]
            self.token_between(node, node.target, node.value, re.escape(old + "="), "arith", new + "=")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        for a, b in zip(node.values, node.values[1:]):
            self.token_between(node, a, b, rf"\b{old}\b", "and-or", new)
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            s, e = self.span(node)
            self.add(node, "drop-not", s, e, f"({self.text(node.operand)})")
        elif isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
            s, e = self.span(node)
            self.add(node, "drop-minus", s, e, f"({self.text(node.operand)})")
        if not (isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)):
            self.generic_visit(node)
        elif isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
            self.constant(node, -node.operand.value)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        idx = node.slice
        self.visit(node.value)
        value = _int_value(idx)
        if value in (0, -1):
            s, e = self.span(idx)
            self.add(idx, "index", s, e, "-1" if value == 0 else "0")
        elif value is None:
            self.visit(idx)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        s, e = self.span(node)
        self.add(node, "other-branch", s, e,
                 f"({self.text(node.orelse)} if {self.text(node.test)} else {self.text(node.body)})")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        self.constant(node, node.value)

    def constant(self, node: ast.AST, value: object) -> None:
        s, e = self.span(node)
        if isinstance(value, bool):
            self.add(node, "bool", s, e, str(not value))
        elif isinstance(value, int):
            self.add(node, "constant", s, e, repr(value + 1))
        elif isinstance(value, float) and value == value:
            self.add(node, "constant", s, e, repr(value * 2 if value else 1.0))

    def visit_arg(self, node: ast.AST) -> None:
        return  # annotations


def _int_value(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) is int:
        return -node.operand.value
    return None


def python_mutants(path: str, source: bytes) -> list[Mutant]:
    col = _Collector(path, source)
    col.visit(ast.parse(source))
    out, seen = [], Counter()
    for line, scope, kind, start, end, after in sorted(col.raw, key=lambda r: (r[3], r[4], r[2], r[5])):
        before = source[start:end].decode()
        if before == after:
            continue
        key = (path, scope, kind, " ".join(before.split()), after)
        rank = seen[key]
        seen[key] += 1
        mid = hashlib.sha1(repr((*key, rank)).encode()).hexdigest()[:10]
        mutant = Mutant(mid, path, line, scope, kind, before, after, start, end)
        try:
            ast.parse(mutant.apply(source))
        except SyntaxError:
            continue
        out.append(mutant)
    return out


# ------------------------------------------------------------------------------------------ C mutants
# Punctuators, longest first (a token is matched greedily, so `<<=` is never read as `<` then `<=`).
_C_PUNCT = sorted(["<<=", ">>=", "->", "++", "--", "&&", "||", "<=", ">=", "==", "!=", "+=", "-=", "*=", "/=", "%=",
                   "&=", "|=", "^=", "<<", ">>", "##", "...", "<", ">", "+", "-", "*", "/", "%", "&", "|", "^", "!",
                   "~", "=", "?", ":", ";", ",", ".", "(", ")", "[", "]", "{", "}", "#"], key=len, reverse=True)
_C_SWAP = {"<": ("compare", "<="), "<=": ("compare", "<"), ">": ("compare", ">="), ">=": ("compare", ">"),
           "==": ("compare", "!="), "!=": ("compare", "=="), "&&": ("and-or", "||"), "||": ("and-or", "&&"),
           "+=": ("arith", "-="), "-=": ("arith", "+="), "<<": ("shift", ">>"), ">>": ("shift", "<<"),
           "<<=": ("shift", ">>="), ">>=": ("shift", "<<="), "&=": ("bitwise", "|="), "|=": ("bitwise", "&="),
           "|": ("bitwise", "&"), "^": ("bitwise", "|")}
_C_BINARY_ONLY = {"+": ("arith", "-"), "-": ("arith", "+"), "&": ("bitwise", "|")}  # not unary minus / address-of
_C_KEYWORDS = {"return", "case", "sizeof", "if", "while", "for", "else", "do", "switch", "goto", "const", "static"}
_C_INT = re.compile(rb"(0[xX][0-9a-fA-F]+|[0-9]+)([uUlL]*)")
_C_TOKEN = re.compile(rb"[A-Za-z_][A-Za-z_0-9]*|[0-9](?:[eEpP][+-]|[0-9a-zA-Z_.])*|"
                      + b"|".join(re.escape(t.encode()) for t in _C_PUNCT))


def _c_tokens(source: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, token, mutable) over C code: comments, string and char literals, and preprocessor directives
    other than ``#define`` bodies are skipped; ``#define`` bodies are code (the macro name is an identifier)."""
    i, n = 0, len(source)
    line_start = True
    while i < n:
        c = source[i:i + 1]
        if c in b" \t\r":
            i += 1
            continue
        if c == b"\n":
            line_start, i = True, i + 1
            continue
        if source.startswith(b"/*", i):
            i = source.index(b"*/", i + 2) + 2
            continue
        if source.startswith(b"//", i):
            i = source.find(b"\n", i)
            i = n if i < 0 else i
            continue
        if c in (b'"', b"'"):
            j = i + 1
            while source[j:j + 1] != c:
                j += 2 if source[j:j + 1] == b"\\" else 1
            i = j + 1
            line_start = False
            continue
        if c == b"\\" and source[i + 1:i + 2] == b"\n":  # a continued #define line
            i += 2
            continue
        if c == b"#" and line_start:
            m = re.match(rb"#\s*define\s+[A-Za-z_0-9]+(\([^)]*\))?", source[i:])
            if m:
                i += m.end()
                line_start = False
                continue
            while True:  # skip the directive with its continuation lines
                j = source.find(b"\n", i)
                if j < 0:
                    i = n
                    break
                if source[j - 1:j] != b"\\":
                    i = j
                    break
                i = j + 1
            continue
        line_start = False
        m = _C_TOKEN.match(source, i)
        if m is None:
            i += 1
            continue
        yield i, m.group(), True
        i = m.end()


def c_mutants(path: str, source: bytes) -> list[Mutant]:
    """Single edits of a C source: comparisons (``<``/``<=``...), ``&&``/``||``, binary ``+``/``-`` and
    ``+=``/``-=``, shifts ``<<``/``>>``, ``&``/``|``/``^`` (and ``&=``/``|=``), integer constants +1 and -1
    (suffixes kept; not array sizes in declarations), a dropped ``!`` or ``~``. Lines holding
    ``pragma: no mutate`` (in a comment) are left alone. Whether the mutant compiles is checked when it runs."""
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    skip = {i + 1 for i, ln in enumerate(lines) if NO_MUTATE.encode() in ln}
    toks = list(_c_tokens(source))
    raw: list[tuple[int, str, str, int, int, str]] = []
    depth, scope, candidate = 0, "<file>", "<file>"
    for k, (pos, tok, _) in enumerate(toks):
        t = tok.decode()
        prev = toks[k - 1][1].decode() if k else ""
        nxt = toks[k + 1][1].decode() if k + 1 < len(toks) else ""
        line = bisect_right(offsets, pos)
        if t == "{":
            if depth == 0:
                scope = candidate
            depth += 1
        elif t == "}":
            depth -= 1
            if depth == 0:
                scope = candidate = "<file>"
        elif depth == 0 and t == ";":
            candidate = "<file>"
        elif depth == 0 and nxt == "(" and re.fullmatch(r"[A-Za-z_]\w*", t) and t != "__attribute__" and candidate == "<file>" and \
                (prev == "*" or re.fullmatch(r"[A-Za-z_]\w*", prev)):  # `T name(`, not `__attribute__((target(`
            candidate = t
        if line in skip:
            continue
        operand_before = bool(re.fullmatch(r"[A-Za-z_0-9.]+", prev)) and prev not in _C_KEYWORDS or prev in (")", "]")
        edit = _C_SWAP.get(t) or (_C_BINARY_ONLY.get(t) if operand_before else None)
        if edit:
            raw.append((line, scope, edit[0], pos, pos + len(tok), edit[1]))
        elif t in ("!", "~"):
            raw.append((line, scope, "drop-not", pos, pos + 1, ""))
        m = _C_INT.fullmatch(tok)
        if m and not _c_array_size(toks, k):
            digits, suffix = m.group(1).decode(), m.group(2).decode()
            value = int(digits, 16 if digits[:2].lower() == "0x" else 10)
            for new in (value + 1, value - 1):
                if new < 0:
                    continue
                text = (hex(new) if digits[:2].lower() == "0x" else str(new)) + suffix
                raw.append((line, scope, "constant", pos, pos + len(tok), text))
    out, seen = [], Counter()
    for line, scope, kind, start, end, after in sorted(raw, key=lambda r: (r[3], r[4], r[2], r[5])):
        before = source[start:end].decode()
        key = (path, scope, kind, before, after)
        rank = seen[key]
        seen[key] += 1
        mid = hashlib.sha1(repr((*key, rank)).encode()).hexdigest()[:10]
        out.append(Mutant(mid, path, line, scope, kind, before, after, start, end))
    return out


def _c_array_size(toks: list[tuple[int, bytes, bool]], k: int) -> bool:
    """True for the N of a declaration ``T name[N]`` / ``T name[M][N]`` (a bigger array changes nothing)."""
    j = k - 1
    if j < 1 or toks[j][1] != b"[" or k + 1 >= len(toks) or toks[k + 1][1] != b"]":
        return False
    j -= 1
    while j >= 2 and toks[j][1] == b"]" and toks[j - 2][1] == b"[":  # earlier dimensions
        j -= 3
    if j < 1 or not re.fullmatch(rb"[A-Za-z_]\w*", toks[j][1]):
        return False
    before = toks[j - 1][1]
    return (bool(re.fullmatch(rb"[A-Za-z_]\w*", before)) and before.decode() not in _C_KEYWORDS) or before == b"*"


def c_compiles(path: Path) -> bool:
    """Whether a (mutated) C source still compiles (syntax and types, for this CPU's instruction sets)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return False
    proc = subprocess.run([cc, "-fsyntax-only", "-march=native", "-pthread", str(path)], capture_output=True)
    return proc.returncode == 0


MUTATORS: dict[str, Callable[[str, bytes], list[Mutant]]] = {".py": python_mutants, ".c": c_mutants}


# ------------------------------------------------------------------------------------------ config
def dotted(path: str) -> str:
    """``plugins/strategies.py`` -> ``bnn_tune.plugins.strategies`` (the name it is imported under)."""
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "bnn_tune" else ["bnn_tune", *parts])


def load_config() -> dict[str, list[str]]:
    """Module (relative path) -> tests (files or node ids), from tools/mutation.toml; a module with ``>>>``
    examples also gets its node of ``doctests`` (its examples are promises too)."""
    with open(CONFIG, "rb") as f:
        cfg = tomllib.load(f)
    out = {}
    for m, tests in cfg["modules"].items():
        tests = list(tests)
        if cfg.get("doctests") and b">>>" in (ROOT / m).read_bytes():
            tests.append(cfg["doctests"].format(module=dotted(m)))
        out[m] = tests
    return out


def load_equivalents() -> dict[str, str]:
    if not EQUIVALENTS.exists():
        return {}
    with open(EQUIVALENTS, "rb") as f:
        data = tomllib.load(f)
    return {k: v["reason"] for k, v in data.items()}


def package_of(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "plugins":
        return "plugins"
    if path.endswith(".py") and len(parts) == 2:
        return path
    if path.endswith(".c"):  # native sources apart from the Python of the same package
        return "/".join(parts[:-1])
    return "/".join(parts[:2])


def fingerprint(paths: list[str]) -> str:
    h = hashlib.sha1()
    for p in dict.fromkeys(p.split("::")[0] for p in paths):
        files = sorted((ROOT / p).rglob("*.py")) if (ROOT / p).is_dir() else [ROOT / p]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def all_mutants(modules: list[str]) -> Iterator[Mutant]:
    for m in modules:
        mutator = MUTATORS.get(Path(m).suffix)
        if mutator is None:
            raise SystemExit(f"error: no mutator for {m} (known: {sorted(MUTATORS)})")
        yield from mutator(m, (ROOT / m).read_bytes())


def selected(mutant: Mutant, shard: tuple[int, int], sample: float) -> bool:
    h = int(mutant.id, 16)
    i, n = shard
    return h % n == i - 1 and (h // n % 10_000) < sample * 10_000


# ------------------------------------------------------------------------------------------ running
_PRELOAD = ("numpy", "torch", "optuna", "pytest", "_pytest.python", "sklearn")


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in {".git", ".venv", "runs", "__pycache__", ".mypy_cache", ".ruff_cache",
                                      ".pytest_cache", "build", "notebooks"} or n.endswith(".egg-info")}


class Runner:
    """A scratch copy of the repository in which one mutant at a time is applied and its tests run."""

    def __init__(self, fork: bool) -> None:
        self.fork = fork
        self.tmp = Path(tempfile.mkdtemp(prefix="bnn-mutate-"))
        self.root = self.tmp / "repo"
        shutil.copytree(ROOT, self.root, symlinks=True, ignore=_ignore)
        self.log = self.tmp / "pytest.log"
        sys.dont_write_bytecode = True
        os.environ.update(PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(self.root), BNN_TUNE_CACHE=str(self.tmp / "cache"),
                          MPLBACKEND="Agg", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        here = {str(ROOT), str(ROOT / "tools"), ""}
        sys.path[:] = [str(self.root)] + [p for p in sys.path if p not in here]
        if fork:
            for mod in _PRELOAD:
                try:
                    __import__(mod)
                except ImportError:
                    pass

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def pytest_args(self, tests: list[str]) -> list[str]:
        return ["-q", "-x", "-p", "no:cacheprovider", "--tb=line", "-W", "ignore", *tests]

    def run_tests(self, tests: list[str], timeout: float) -> tuple[str, float]:
        """Run ``tests`` in the copy; (status, seconds) with status passed/failed/timeout/error."""
        t0 = time.monotonic()
        if self.fork:
            rc = self._forked(tests, timeout)
        else:
            rc = self._spawned(tests, timeout)
        dt = time.monotonic() - t0
        if rc is None:
            return "timeout", dt
        if rc < 0:  # the tests crashed (a C mutant's out-of-bounds write, SIGSEGV): a test caught it
            return "failed", dt
        return {0: "passed", 1: "failed", 2: "failed"}.get(rc, "error"), dt

    def _forked(self, tests: list[str], timeout: float) -> int | None:
        pid = os.fork()
        if pid == 0:  # child: its own process group, output to the log, pytest in the copy
            code = 3
            try:
                os.setsid()
                fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.chdir(self.root)
                import pytest

                code = int(pytest.main(self.pytest_args(tests)))
            finally:
                os._exit(code)
        return self._wait(pid, timeout)

    def _spawned(self, tests: list[str], timeout: float) -> int | None:
        with open(self.log, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "pytest", *self.pytest_args(tests)], cwd=self.root,
                                    stdout=log, stderr=log, start_new_session=True)
        return self._wait(proc.pid, timeout, proc)

    @staticmethod
    def _wait(pid: int, timeout: float, proc: subprocess.Popen | None = None) -> int | None:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc is not None:
                    if proc.poll() is not None:
                        return proc.returncode
                else:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        return os.waitstatus_to_exitcode(status)
                time.sleep(0.05)
            return None
        finally:  # timeout or Ctrl-C: the child's whole process group goes
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc is not None:
                proc.wait()
            else:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass

    def run_mutant(self, mutant: Mutant, tests: list[str], timeout: float) -> tuple[str, float]:
        target = self.root / mutant.path
        original = target.read_bytes()
        try:
            target.write_bytes(mutant.apply(original))
            if target.suffix == ".c" and not c_compiles(target):
                return "uncompilable", 0.0  # no test could judge it (the kernel's tests would skip, not fail)
            return self.run_tests(tests, timeout)
        finally:
            target.write_bytes(original)


# ------------------------------------------------------------------------------------------ results
def read_results(path: Path) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                latest[r["id"]] = r
    return latest


def reusable(previous: dict | None, module_fp: str, tests_fp: str) -> bool:
    if previous is None or previous.get("module_fp") != module_fp:
        return False
    if previous["status"] in ("killed", "timeout", "uncompilable"):
        return True
    if previous["status"] == "error":  # pytest neither passed nor failed: judge it again
        return False
    return previous.get("tests_fp") == tests_fp


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config()
    modules = args.module or list(config)
    unknown = [m for m in modules if m not in config]
    if unknown:
        raise SystemExit(f"error: {unknown} not in {CONFIG.relative_to(ROOT)}. Available: {sorted(config)}")
    results_path = Path(args.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_results(results_path)
    equivalents = load_equivalents()
    todo = []
    for mutant in all_mutants(modules):
        if not selected(mutant, args.shard, args.sample) or mutant.id in equivalents:
            continue
        if args.id and mutant.id not in args.id:
            continue
        tests = config[mutant.path]
        mfp, tfp = fingerprint([mutant.path]), fingerprint(tests)
        if not args.fresh and reusable(previous.get(mutant.id), mfp, tfp):
            continue
        todo.append((mutant, tests, mfp, tfp))
    if args.order == "random":
        random.Random(0).shuffle(todo)
    print(f"{len(todo)} mutants to run (shard {args.shard[0]}/{args.shard[1]}, sample {args.sample:g})", flush=True)
    if not todo:
        return 0
    started = time.monotonic()
    runner = Runner(fork=not args.no_fork)
    baseline: dict[tuple[str, ...], float] = {}
    try:
        for n, (mutant, tests, mfp, tfp) in enumerate(todo, 1):
            if args.budget and time.monotonic() - started > args.budget:
                print(f"budget of {args.budget:g} s spent: stopping; rerun the same command to continue", flush=True)
                break
            key = tuple(tests)
            if key not in baseline:
                status, dt = runner.run_tests(tests, timeout=600)
                if status != "passed":
                    print(runner.log.read_text()[-3000:])
                    raise SystemExit(f"error: the unmutated tests {tests} did not pass ({status}); fix that first")
                baseline[key] = dt
            timeout = 3 * baseline[key] + 15
            status, dt = runner.run_mutant(mutant, tests, timeout)
            verdict = {"passed": "survived", "failed": "killed", "timeout": "timeout",
                       "uncompilable": "uncompilable"}.get(status, "error")
            record = {**asdict(mutant), "status": verdict, "seconds": round(dt, 2), "module_fp": mfp, "tests_fp": tfp,
                      "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"[{n}/{len(todo)}] {verdict:8s} {dt:5.1f}s {mutant.id} {mutant.describe()}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: results so far are kept; rerun to continue")
        return 130
    finally:
        runner.close()
    write_report(results_path, Path(args.report), modules=list(config))
    return 0


def write_report(results_path: Path, report_path: Path, modules: list[str], *, stale_ok: bool = False) -> None:
    latest = read_results(results_path)
    equivalents = load_equivalents()
    current = {m.id: m for m in all_mutants(modules)}
    per_pkg: dict[str, Counter] = defaultdict(Counter)
    survivors, errors = [], []
    for mid, m in current.items():
        pkg = package_of(m.path)
        per_pkg[pkg]["mutants"] += 1
        if mid in equivalents:
            per_pkg[pkg]["equivalent"] += 1
            continue
        r = latest.get(mid)
        if r is None or (r.get("module_fp") != fingerprint([m.path]) and not stale_ok):
            per_pkg[pkg]["not run"] += 1
            continue
        per_pkg[pkg][r["status"]] += 1  # "uncompilable" (a C mutant that does not build) is counted apart
        if r["status"] == "survived":
            survivors.append(m)
        elif r["status"] == "error":
            errors.append(m)
    lines = ["# Mutation report", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python tools/mutate.py report` from "
             f"`{results_path.relative_to(ROOT) if results_path.is_relative_to(ROOT) else results_path}`. "
             "Score = (killed + timeout) / (killed + timeout + survived + error), over the mutants run; "
             "equivalent mutants (tools/mutation_equivalents.toml) are left out.", "",
             "| package | mutants | run | killed | timeout | survived | error | equivalent | not run | score |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for pkg in sorted(per_pkg):
        c = per_pkg[pkg]
        judged = sum(c[s] for s in STATUSES)
        score = f"{100 * (c['killed'] + c['timeout']) / judged:.1f}%" if judged else "-"
        lines.append(f"| {pkg} | {c['mutants']} | {judged} | {c['killed']} | {c['timeout']} | {c['survived']} | "
                     f"{c['error']} | {c['equivalent']} | {c['not run']} | {score} |")
    uncompilable = {pkg: c["uncompilable"] for pkg, c in sorted(per_pkg.items()) if c["uncompilable"]}
    if uncompilable:
        lines += ["", "C mutants that do not compile (dropped, as Python mutants that do not parse are): "
                  + ", ".join(f"{pkg} {n}" for pkg, n in uncompilable.items()) + "."]
    lines += ["", f"## Survivors ({len(survivors)})", ""]
    lines += [f"- `{m.id}` {m.describe()} (in `{m.scope}`)" for m in sorted(survivors, key=lambda m: (m.path, m.line))]
    if errors:
        lines += ["", f"## Errors ({len(errors)}): pytest neither passed nor failed", ""]
        lines += [f"- `{m.id}` {m.describe()}" for m in errors]
    lines += ["", f"## Equivalent ({sum(1 for i in current if i in equivalents)})", ""]
    lines += [f"- `{i}` {current[i].describe()}: {equivalents[i]}" for i in current if i in equivalents]
    stale = sorted(set(equivalents) - set(current))
    if stale:
        lines += ["", "Equivalents file entries that match no current mutant (code changed): " + ", ".join(stale)]
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6 + len(per_pkg) + 1]))
    print(f"report: {report_path}")


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config()
    mutants = [m for m in all_mutants(args.module or list(config)) if selected(m, args.shard, args.sample)]
    for m in mutants:
        print(m.id, m.describe())
    by_pkg = Counter(package_of(m.path) for m in mutants)
    print(f"{len(mutants)} mutants: " + ", ".join(f"{p} {n}" for p, n in sorted(by_pkg.items())), file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = load_config()
    for m in all_mutants(list(config)):
        if m.id == args.id:
            src = (ROOT / m.path).read_bytes()
            old, new = src.decode().splitlines(), m.apply(src).decode().splitlines()
            import difflib

            print(m.describe(), f"(in {m.scope})")
            print("\n".join(difflib.unified_diff(old, new, m.path, m.path + " (mutant)", n=2, lineterm="")))
            return 0
    raise SystemExit(f"error: no mutant {args.id!r}")


def _shard(text: str) -> tuple[int, int]:
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise argparse.ArgumentTypeError(f"--shard must be i/n with 1 <= i <= n, but got {text!r}")
    return int(i), int(n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "list", "report", "show"):
        s = sub.add_parser(name)
        if name == "show":
            s.add_argument("id")
            continue
        s.add_argument("--module", action="append", help="a module of tools/mutation.toml (repeatable); default all")
        s.add_argument("--shard", type=_shard, default=(1, 1), help="i/n: the i-th of n disjoint pieces")
        s.add_argument("--sample", type=float, default=1.0, help="fraction of mutants kept (stable by mutant id)")
        s.add_argument("--results", default=str(OUT / "results.jsonl"))
        s.add_argument("--report", default=str(OUT / "REPORT.md"))
        if name == "report":
            s.add_argument("--stale-ok", action="store_true",
                           help="count results of an older version of a module too (a before/after comparison)")
        if name == "run":
            s.add_argument("--budget", type=float, default=0, help="stop starting mutants after this many seconds")
            s.add_argument("--fresh", action="store_true", help="rerun mutants that have a reusable result")
            s.add_argument("--no-fork", action="store_true", help="a fresh interpreter per mutant (slower)")
            s.add_argument("--order", choices=("file", "random"), default="file")
            s.add_argument("--id", action="append", help="run only this mutant (repeatable; with --module for speed)")
    args = p.parse_args(argv)
    if args.cmd == "run":
        return cmd_run(args)
    if args.cmd == "list":
        return cmd_list(args)
    if args.cmd == "show":
        return cmd_show(args)
    write_report(Path(args.results), Path(args.report), modules=list(load_config()), stale_ok=args.stale_ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
