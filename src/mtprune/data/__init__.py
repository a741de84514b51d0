"""Data: what a data set is (segments.py), where it is read from (readers.py: TSV, CSV, JSONL, TMX, text,
datasets), the bundled sample (sample.py), the spec built, loaded and split (specs.py), and languages.
"""
