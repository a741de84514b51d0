"""Models: loading (packaged, folder, .gguf, hub), the layer stack and its surgery, checkpoints and their
records, shape, memory estimates and the fit check.
"""
