"""A small decoder language model trained here, on text every machine with Python has: the docstrings of
a fixed list of standard-library modules (English prose about programming, about 320 kB). It is the
serving planner's probe of a format's effect on language-model quality: its perplexity under a chip's
numerics against its own FP32 perplexity (`chipfit.serve.quality`).

Byte-level (256 symbols, no tokenizer to download), chipfit's own Llama-style `Decoder` (RMSNorm, rotary
positions, grouped-query attention, SwiGLU), 3 layers of width 128. The text is split 90 / 10 by
position into training and held-out parts. Training is deterministic (seeded, a fixed two threads),
takes about a minute here (`make setup` does it), and the weights are cached under the chipfit cache
directory (`tinylm-v1.pt`, written atomically), as digits-cnn's are; delete the file to train again.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings

import torch
from torch import nn

from chipfit.models.transformer import Decoder, DecoderConfig
from chipfit.models.weights import cached_weights

__all__ = ["CONFIG", "CONTEXT", "corpus", "held_out", "tinylm_pretrained", "train_tinylm"]

WEIGHTS_FILE = "tinylm-v1.pt"
CONFIG = DecoderConfig(dim=128, layers=3, heads=4, kv_heads=2, ffn=352, vocab=256)
CONTEXT = 128  # tokens (bytes) per training and evaluation sequence
STEPS, BATCH, LR, SEED = 400, 16, 3e-3, 0
THREADS = 2  # training threads (a fixed count: the same reductions, the same weights, on every run)
MODULES = ("argparse", "asyncio.tasks", "base64", "bisect", "calendar", "collections", "contextlib", "csv",
           "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions", "functools",
           "glob", "heapq", "http.client", "inspect", "io", "itertools", "json", "logging", "os", "pathlib",
           "pickle", "random", "re", "shutil", "socket", "statistics", "string", "subprocess", "tarfile",
           "tempfile", "textwrap", "threading", "typing", "unittest.case", "urllib.parse", "uuid",
           "zipfile")  # fmt: skip


@functools.cache
def corpus() -> bytes:
    """The docstrings of MODULES and of their public classes, functions and methods, in a fixed order."""
    parts: list[str] = []
    with warnings.catch_warnings():  # reading typing's deprecated aliases (typing.re) warns
        warnings.simplefilter("ignore", DeprecationWarning)
        _collect(parts)
    text = "\n\n".join(p for p in parts if p)
    return text.encode("utf-8")


def _collect(parts: list[str]) -> None:
    for name in MODULES:
        mod = importlib.import_module(name)
        parts.append(inspect.getdoc(mod) or "")
        for attr in sorted(n for n in dir(mod) if not n.startswith("_")):
            obj = getattr(mod, attr, None)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "") == mod.__name__:
                parts.append(inspect.getdoc(obj) or "")
                if inspect.isclass(obj):
                    for m in sorted(k for k in vars(obj) if not k.startswith("_")):
                        if inspect.isfunction(f := vars(obj)[m]):
                            parts.append(inspect.getdoc(f) or "")


def _split() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.frombuffer(bytearray(corpus()), dtype=torch.uint8).long()
    cut = int(len(data) * 0.9)
    return data[:cut], data[cut:]


def held_out(sequences: int = 24) -> torch.Tensor:
    """(sequences, CONTEXT + 1) byte ids from the held-out tenth, evenly spaced through it."""
    test = _split()[1]
    n = CONTEXT + 1
    step = max(1, (len(test) - n) // sequences)
    return torch.stack([test[i * step : i * step + n] for i in range(sequences)])


def train_tinylm(steps: int = STEPS, seed: int = SEED) -> Decoder:
    """AdamW at `LR` with a cosine decay, batches of BATCH random windows of the training text."""
    train = _split()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = Decoder(CONFIG)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(steps):
            at = torch.randint(0, len(train) - CONTEXT - 1, (BATCH,), generator=g)
            x = torch.stack([train[i : i + CONTEXT + 1] for i in at.tolist()])
            opt.zero_grad()
            loss = loss_fn(model(x[:, :-1]).reshape(-1, CONFIG.vocab), x[:, 1:].reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def tinylm_pretrained(retrain: bool = False) -> Decoder:
    """The trained model: from the cache, or trained now (and cached)."""
    return cached_weights(WEIGHTS_FILE, lambda: Decoder(CONFIG), train_tinylm, retrain)
