"""tools/mutate.py, the project's mutation-testing run (TESTING.md): which edits it makes and that their ids are
stable. The run itself is `make mutation`, not part of the suite."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mutate():
    spec = importlib.util.spec_from_file_location("bnn_tune_mutate_tool", ROOT / "tools" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


SOURCE = '''"""Docstring: never mutated."""
import math

__all__ = ["f"]


def f(a, b, *, xs=(1, 2)):
    """Not this either."""
    if a < b and not math.isnan(a):
        return max(a, b) + xs[0]
    raise ValueError(f"bad {a + 1}")


def g(flag):
    return -flag if flag else xs[-1] * 2.0
'''


def _edits(mutate, source=SOURCE):
    return {(m.kind, " ".join(m.before.split()), m.after) for m in mutate.python_mutants("m.py", source.encode())}


def test_the_plausible_edits_and_nothing_in_strings_docstrings_or_raise(mutate):
    edits = _edits(mutate)
    for expected in [("compare", "<", "<="), ("and-or", "and", "or"), ("drop-not", "not math.isnan(a)", "(math.isnan(a))"),
                     ("max-min", "max", "min"), ("arith", "+", "-"), ("index", "0", "-1"), ("index", "-1", "0"),
                     ("constant", "1", "2"), ("constant", "2.0", "4.0"), ("drop-minus", "-flag", "(flag)"),
                     ("other-branch", "-flag if flag else xs[-1] * 2.0", "(xs[-1] * 2.0 if flag else -flag)"),
                     ("arith", "*", "/")]:
        assert expected in edits, expected
    assert not any("Docstring" in b or "bad" in b or '"f"' in b for _, b, _ in edits)
    assert ("arith", "+", "-") in edits and sum(1 for k, b, _ in edits if k == "arith" and b == "+") == 1  # not a + 1


def test_every_mutant_parses_and_changes_only_its_span(mutate):
    src = SOURCE.encode()
    for m in mutate.python_mutants("m.py", src):
        mutated = m.apply(src)
        ast.parse(mutated)
        assert mutated[: m.start] == src[: m.start] and mutated.endswith(src[m.end:])


def test_ids_survive_edits_elsewhere_in_the_file(mutate):
    before = {m.id: m.before for m in mutate.python_mutants("m.py", SOURCE.encode())}
    shifted = SOURCE.replace("import math\n", "import math\nimport os  # an unrelated edit\n\nY = 3\n")
    after = {m.id: m.before for m in mutate.python_mutants("m.py", shifted.encode())}
    assert set(before) <= set(after) and len(before) == len(set(before))


def test_every_configured_module_and_test_path_exists(mutate):
    config = mutate.load_config()
    assert config
    for module, tests in config.items():
        assert (ROOT / module).is_file(), module
        for t in tests:
            assert (ROOT / t.split("::")[0]).exists(), t


C_SOURCE = b'''/* a comment: a < b never mutated */
#include <stdint.h>
#define LIMIT 64 /* pragma: no mutate: a block size */
#define SCALE(x) ((x) << 2)

static int f(const uint32_t* p, int n) {
    int acc[16] = {0};
    int s = 0;
    for (int i = 0; i < n && p[i] != 0; ++i) s += __builtin_popcount(p[i] ^ 0xffu) - 1;
    const char* msg = "x <= y";
    return s >= LIMIT ? -s : (s & 3) | !n;
}
'''


def _c_edits(mutate, source=C_SOURCE):
    return {(m.kind, m.before, m.after) for m in mutate.c_mutants("k.c", source)}


def test_c_mutator_edits_operators_and_constants_but_not_comments_strings_or_declared_sizes(mutate):
    edits = _c_edits(mutate)
    for expected in [("compare", "<", "<="), ("compare", ">=", ">"), ("compare", "!=", "=="), ("and-or", "&&", "||"),
                     ("arith", "+=", "-="), ("arith", "-", "+"), ("bitwise", "^", "|"), ("bitwise", "&", "|"),
                     ("bitwise", "|", "&"), ("shift", "<<", ">>"), ("constant", "0xffu", "0x100u"),
                     ("constant", "0xffu", "0xfeu"), ("constant", "2", "3"), ("constant", "2", "1"),
                     ("drop-not", "!", "")]:
        assert expected in edits, expected
    befores = [b for _, b, _ in edits]
    assert "16" not in befores  # acc[16]: a declared array size
    assert "64" not in befores  # the pragma line
    assert "<=" not in befores  # only inside the comment and the string
    # unary minus (-s) is not an arithmetic edit: only the one binary `- 1` is
    assert sum(1 for m in mutate.c_mutants("k.c", C_SOURCE) if m.kind == "arith" and m.before == "-") == 1


def test_c_mutants_change_only_their_span_and_ids_are_stable(mutate):
    ms = mutate.c_mutants("k.c", C_SOURCE)
    assert len({m.id for m in ms}) == len(ms)
    for m in ms:
        out = m.apply(C_SOURCE)
        assert out[: m.start] == C_SOURCE[: m.start] and out.endswith(C_SOURCE[m.end:])
        assert m.scope == ("f" if m.line > 5 else "<file>")
    shifted = C_SOURCE.replace(b"#include <stdint.h>\n", b"#include <stdint.h>\n#include <string.h>\n\n")
    assert {m.id for m in ms} <= {m.id for m in mutate.c_mutants("k.c", shifted)}


def test_every_configured_c_source_has_mutants_and_a_c_mutator(mutate):
    c_modules = [m for m in mutate.load_config() if m.endswith(".c")]
    assert c_modules and ".c" in mutate.MUTATORS
    for m in c_modules:
        assert mutate.c_mutants(m, (ROOT / m).read_bytes()), m
        assert mutate.package_of(m) == "bnn_tune/kernels/csrc"
