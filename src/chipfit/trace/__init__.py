"""Trace any PyTorch model without running it: every aten op with FLOPs, bytes and memory."""

from chipfit.trace.capture import KVCacheModel, TraceError, trace
from chipfit.trace.classify import OP_CLASSES
from chipfit.trace.records import Footprint, OpRecord, Trace

__all__ = ["OP_CLASSES", "Footprint", "KVCacheModel", "OpRecord", "Trace", "TraceError", "trace"]
