"""The dependency arrows of the README's Layout section, enforced on the source: every import of every shipped
module, read with ``ast`` (imports inside functions count: a lazy import is still an arrow).

* ``serve`` imports neither ``prnseg.training``, ``prnseg.export``, ``prnseg.demo`` nor torch (nor
  the other packages of the ``[train]``, ``[export]`` and ``[demo]`` extras): ``pip install prnseg``
  is numpy, OpenCV and ONNX Runtime.
* ``training`` imports neither ``prnseg.serve``, ``prnseg.export`` nor ``prnseg.demo``.
* Nothing imports ``prnseg.demo`` but the demo itself and the CLI dispatcher, whose mode table
  names it for ``prnseg demo``.
* The root package's contracts (label sets, image I/O, the model.json spec, numpy metrics, errors,
  sizes, the atomic writer, number formats, path checks) import no part and no torch, and of the
  root only each other. The root's other helpers (e.g. the device resolver) import no part either.
  ``import prnseg`` itself loads nothing but the contracts (its lazy ``prnseg.api`` attribute aside).
* The root's orchestrators (the CLI dispatcher, the Python API, the quickstart, the bench) sit above
  the parts: a part imports none of them, except that the module implementing a CLI mode (the
  dispatcher's mode table) may call the Python API under it.
* Between the parts only the arrows below exist, so there is no cycle.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from pathlib import Path

from conftest import run_python_without_torch

REPO = Path(__file__).resolve().parents[1]

PARTS = ("training", "serve", "export", "demo")
#: the root's torch-free contracts every part shares (prnseg/<name>.py); the package itself
#: (``__init__``: the version) may be imported by anyone too
ROOT_CONTRACTS = ("errors", "labels", "image_io", "model_spec", "metrics", "sizes", "atomic", "formatting", "checks")
#: the root's orchestrators, above the parts (prnseg/<name>.py or prnseg/<name>/)
ROOT_ORCHESTRATORS = ("cli", "__main__", "api", "quickstart", "bench")
#: what a CLI mode's module may import of the orchestrators: the Python API it parses arguments for
CLI_MAY_CALL = ("api",)
#: part -> parts it may import. export builds on the trained model (training) and runs its TensorRT
#: plans through serve's runtime for the parity gate; the demo is a front end of serve.
ALLOWED_PART_ARROWS = {"training": set(), "serve": set(), "export": {"training", "serve"}, "demo": {"serve"}}
#: the CLI dispatcher: its mode table maps each subcommand to the module that implements it
DISPATCHER = "prnseg.cli"
#: third-party packages of the extras ([train], [export], [demo]) that serve must not need
HEAVY = ("torch", "torchvision", "transformers", "onnx", "onnxscript", "onnxconverter_common", "gradio")
#: calls whose literal string argument is a module imported at run time
DYNAMIC_IMPORTS = {"import_module", "__import__", "find_spec"}


def _shipped_modules() -> dict[str, Path]:
    """module name -> file, for the packages pyproject.toml ships (mapped by its package-dir)."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setup["package-dir"]
    modules = {}
    for pkg in setup["packages"]:
        base = max((p for p in dirs if pkg == p or pkg.startswith(p + ".")), key=len)
        folder = REPO / dirs[base] / Path(*pkg[len(base):].split(".")[1:])
        for f in sorted(folder.glob("*.py")):
            modules[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return modules


MODULES = _shipped_modules()
#: orchestrating scripts at the repository root, held to the demo rule too
SCRIPTS = {f"bench/{f.name}": f for f in sorted((REPO / "bench").glob("*.py"))}


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported name) for every import in the file; ``from A import b`` gives ``A.b`` (b may
    be a module), relative imports are resolved, and a literal ``import_module("x")`` gives x."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package_of(module, path).split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            found += [(node.lineno, base if a.name == "*" else f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in DYNAMIC_IMPORTS:
                found.append((node.lineno, node.args[0].value))
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def part_of(module: str) -> str:
    """"training", "serve", "export", "demo", or "root" (prnseg's own modules, prnseg.bench included)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PARTS else "root"


def module_of(name: str) -> str | None:
    """The shipped module an imported name lies in (``prnseg.__version__`` -> ``prnseg``), else None."""
    parts = name.split(".")
    return next((m for i in range(len(parts), 0, -1) if (m := ".".join(parts[:i])) in MODULES), None)


def root_module(name: str) -> str | None:
    """The root module (``labels``, ``api``, ``bench``, ...) an imported name lies in, else None."""
    module = module_of(name)
    if module is None or part_of(module) != "root":
        return None
    return "__init__" if module == "prnseg" else module.split(".")[1]


def _cli_modules() -> set[str]:
    from prnseg.cli import MODES

    return {module for module, _ in MODES.values()}


def _edges():
    for module, path in MODULES.items():
        for line, name in imports_of(module, path):
            yield module, path, line, name


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


def _format(problems: list[str]) -> str:
    return "\n  " + "\n  ".join(sorted(set(problems)))


def test_every_shipped_module_is_scanned():
    assert {"prnseg.serve.predictor", "prnseg.training.trainer", "prnseg.export.exporter", "prnseg.demo.app",
            "prnseg.labels", "prnseg.image_io", "prnseg.model_spec", "prnseg.metrics", "prnseg.cli"} <= set(MODULES)
    assert all(path.is_file() for path in MODULES.values())
    assert not any(_under(m, "prnseg.serve") and m.rpartition(".")[2] in ("labels", "image_io", "model_spec")
                   for m in MODULES), "the shared contracts live in the root package, not in serve"


def test_serve_imports_neither_training_export_demo_nor_torch():
    forbidden = ("prnseg.training", "prnseg.export", "prnseg.demo", *HEAVY)
    bad = [f"{_where(path, line)} imports {name}" for module, path, line, name in _edges()
           if part_of(module) == "serve" and any(_under(name, f) for f in forbidden)]
    assert not bad, "serve must stay torch-free and below training/export/demo:" + _format(bad)


def test_training_imports_neither_serve_export_nor_demo():
    forbidden = ("prnseg.serve", "prnseg.export", "prnseg.demo")
    bad = [f"{_where(path, line)} imports {name}" for module, path, line, name in _edges()
           if part_of(module) == "training" and any(_under(name, f) for f in forbidden)]
    assert not bad, "training may use only the root contracts (prnseg.labels, ...), not serve:" + _format(bad)


def test_only_the_demo_and_the_cli_dispatcher_import_the_demo():
    scanned = [(m, p) for m, p in MODULES.items() if part_of(m) != "demo" and m != DISPATCHER]
    scanned += list(SCRIPTS.items())
    bad = [f"{_where(path, line)} imports {name}" for module, path in scanned
           for line, name in imports_of(module, path) if _under(name, "prnseg.demo")]
    assert not bad, "prnseg.demo is a leaf; nothing builds on it:" + _format(bad)


def _contract_modules() -> set[str]:
    return {f"prnseg.{m}" for m in ROOT_CONTRACTS}


def test_root_contracts_import_no_part_and_no_torch():
    contracts = _contract_modules()
    assert contracts <= set(MODULES), f"not shipped: {sorted(contracts - set(MODULES))}"
    bad = []
    for module, path, line, name in _edges():
        if module not in contracts:
            continue
        if any(_under(name, f"prnseg.{p}") for p in PARTS) or any(_under(name, h) for h in HEAVY):
            bad.append(f"{_where(path, line)} imports {name}")
        elif (root := root_module(name)) is not None and root not in (*ROOT_CONTRACTS, "__init__"):
            bad.append(f"{_where(path, line)} imports {name} (of the root, a contract uses only the contracts)")
    assert not bad, "the root contracts are torch-free and import no part:" + _format(bad)


def test_importing_prnseg_loads_only_the_contracts():
    """What ``import prnseg`` runs (the module body, not a lazy ``__getattr__``) imports no part, no
    torch and of the root only the contracts: every ``import prnseg.serve`` pays for it."""
    tree = ast.parse(MODULES["prnseg"].read_text())
    body = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    names = [(node.lineno, a.name if isinstance(node, ast.Import) else f"{node.module}.{a.name}")
             for stmt in body for node in ast.walk(stmt) if isinstance(node, (ast.Import, ast.ImportFrom))
             for a in node.names]
    bad = [f"prnseg/__init__.py:{line} imports {name}" for line, name in names
           if any(_under(name, f"prnseg.{p}") for p in PARTS) or any(_under(name, h) for h in HEAVY)
           or root_module(name) not in (None, *ROOT_CONTRACTS)]
    assert not bad, "import prnseg must stay light:" + _format(bad)


def test_root_helpers_import_no_part():
    helpers = [m for m in MODULES if part_of(m) == "root" and root_module(m) not in (*ROOT_ORCHESTRATORS, "__init__")]
    bad = [f"{_where(MODULES[m], line)} imports {name}" for m in helpers for line, name in imports_of(m, MODULES[m])
           if any(_under(name, f"prnseg.{p}") for p in PARTS)
           or root_module(name) in ROOT_ORCHESTRATORS]
    assert not bad, "the root's shared helpers sit below the parts:" + _format(bad)


def test_parts_import_no_orchestrator():
    cli_modules = _cli_modules()
    bad = [f"{_where(path, line)} imports {name}" for module, path, line, name in _edges()
           if part_of(module) != "root" and (root := root_module(name)) in ROOT_ORCHESTRATORS
           and not (module in cli_modules and root in CLI_MAY_CALL)]
    assert not bad, ("the CLI, the Python API, the quickstart and the bench sit above the parts (only a CLI "
                     "mode's module calls the API):" + _format(bad))


def test_the_parts_import_each_other_one_way_only():
    arrows = defaultdict(set)
    where = {}
    for module, path, line, name in _edges():
        src = part_of(module)
        dst = next((p for p in PARTS if _under(name, f"prnseg.{p}")), None)
        if src in PARTS and dst is not None and dst != src:
            arrows[src].add(dst)
            where.setdefault((src, dst), f"{_where(path, line)} imports {name}")
    bad = [f"{src} -> {dst} ({where[src, dst]})" for src in arrows for dst in arrows[src]
           if dst not in ALLOWED_PART_ARROWS[src]]
    assert not bad, "arrows between the parts outside the README's Layout:" + _format(bad)

    def cycle_from(node, stack):
        for nxt in sorted(arrows[node]):
            if nxt in stack:
                return stack[stack.index(nxt):] + [nxt]
            if found := cycle_from(nxt, stack + [nxt]):
                return found
        return None

    cycles = [c for p in PARTS if (c := cycle_from(p, [p]))]
    assert not cycles, f"import cycle between the parts: {' -> '.join(cycles[0])}"


def test_the_scanner_sees_lazy_relative_and_dynamic_imports(tmp_path):
    f = tmp_path / "mod.py"
    f.write_text("import importlib\n"
                 "def later():\n"
                 "    from ..training import trainer\n"
                 "    from . import sibling\n"
                 "    import torch.nn\n"
                 "    return importlib.import_module('prnseg.demo.app')\n")
    names = {name for _, name in imports_of("prnseg.serve.mod", f)}
    assert {"prnseg.training.trainer", "prnseg.serve.sibling", "torch.nn", "prnseg.demo.app"} <= names
    assert part_of("prnseg.serve.mod") == "serve" and part_of("prnseg.bench.run") == "root"
    assert root_module("prnseg.__version__") == "__init__" and root_module("prnseg.labels.IGNORE_INDEX") == "labels"
    assert root_module("prnseg.bench.run.run_bench") == "bench" and root_module("prnseg.serve.Predictor") is None
    assert {"prnseg.serve.label_cli", "prnseg.training.train_cli"} <= _cli_modules()


def test_serve_and_the_root_contracts_import_with_torch_absent():
    serve = sorted(m for m in MODULES if part_of(m) == "serve")
    contracts = sorted(_contract_modules())
    code = ("import importlib\n"
            f"for name in {serve + contracts!r}:\n"
            "    importlib.import_module(name)\n"
            "import prnseg.serve\n"
            "assert prnseg.serve.Predictor.__name__ == 'Predictor'\n"
            "assert 'torch' not in sys.modules\n"
            "print('ok')\n")
    out = run_python_without_torch(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
