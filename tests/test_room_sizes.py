"""The house rule: no module over 600 lines and no function over 80 lines in the product's parts."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("prnseg", "training", "export", "serve", "demo")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def sources():
    for part in PARTS:
        yield from sorted((ROOT / part).rglob("*.py"))


def test_the_parts_are_found():
    files = list(sources())
    assert all(any(ROOT / part in p.parents for p in files) for part in PARTS) and len(files) > 50


def test_no_module_over_600_lines():
    big = [f"{p.relative_to(ROOT)}: {n} lines" for p in sources()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them along their seams):\n" + "\n".join(big)


def test_no_function_over_80_lines():
    long = []
    for p in sources():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"), filename=str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
