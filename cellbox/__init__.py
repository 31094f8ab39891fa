"""cellbox: run Python cells for other programs.

A supervisor process (``cellbox serve``) owns sessions; each session is a child interpreter
with a persistent namespace and event loop. Clients talk JSON-RPC 2.0 over stdio.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
