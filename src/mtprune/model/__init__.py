"""Models: loading (folder, hub; packaged models and .gguf files converted once), the layer stack and its surgery, checkpoints and their
records, shape, memory estimates and the fit check.
"""
