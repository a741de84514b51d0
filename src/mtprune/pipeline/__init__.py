"""Whole runs: the recipe (YAML -> checked stage configs), the staged run, its report, the submission.
"""
