"""Numeric kernels on numpy arrays. No ONNX imports, no I/O, no global state."""
