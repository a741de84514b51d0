"""The command line: the parser, shared options and one module per command (commands/).

The only floor that knows argparse: each command turns its flags into a stage's typed config and calls
the library's ``run_<stage>(cfg)``.
"""
