"""prnseg: domain-adaptive semantic segmentation with pseudo-label self-refinement.

The root package stays tiny (version, errors, CLI) so that ``import prnseg.serve`` pulls in
neither torch nor anything heavy. The Python API under the CLI is :mod:`prnseg.api`
(``from prnseg import api``; ``prnseg.api`` also resolves after a plain ``import prnseg``), itself
torch-free until one of its functions runs.
"""

import os as _os

__version__ = "0.1.0"

# The parts live in top-level folders (training/, serve/, export/, demo/) that pyproject.toml maps
# into prnseg.*. Run from a source checkout (python -m prnseg, or a test subprocess whose working
# directory is the checkout), this folder shadows the installed package; let it find the parts.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "pyproject.toml")) and _os.path.isfile(
        _os.path.join(_checkout, "serve", "__init__.py")):
    __path__.append(_checkout)


def __getattr__(name: str):
    """``prnseg.api`` on first use, so that ``import prnseg`` stays light."""
    if name == "api":
        import importlib

        return importlib.import_module("prnseg.api")
    raise AttributeError(f"module 'prnseg' has no attribute {name!r}")
