"""Data: specs (file, sample:SRC-TGT, hf:), readers (TSV, TMX, JSONL, WMT XML), the bundled sample and languages.
"""
