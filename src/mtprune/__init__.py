"""mtprune: iterative layer pruning of LLMs for machine translation.

Importing this package never imports torch; heavy modules load on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
