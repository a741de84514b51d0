"""Compression: the pruning plan and its application, vocabulary trimming and quantization.
"""
