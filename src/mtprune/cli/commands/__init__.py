"""The subcommands, one module each: ``add_parser(subparsers)`` and ``run(args) -> int``.

``cli/main.py`` registers them (``COMMAND_MODULES``); they import torch only when they run.
"""
