"""chipfit: run any PyTorch model on AI accelerators you do not own."""

__version__ = "0.1.0"
