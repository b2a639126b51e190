"""prnseg: domain-adaptive semantic segmentation with pseudo-label self-refinement.

The root package stays tiny (version, errors, CLI) so that ``import prnseg.serve`` pulls in
neither torch nor anything heavy.
"""

__version__ = "0.1.0"
