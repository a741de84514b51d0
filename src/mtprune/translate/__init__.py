"""Translating: prompts, retrieved examples, document context and the backends (transformers, vLLM).
"""
