"""Subcommands that live in their own module: each has ``add_parser(subparsers)`` and ``run(args) -> int``.

``cli.py`` registers them; like every command they import torch only when they run.
"""
