"""The digits task: scikit-learn's bundled 8x8 handwritten digits and a small CNN trained on them.

`load_digits` ships inside scikit-learn (1,797 real images by 43 writers; UCI
optdigits test set), so nothing is downloaded. The split is stratified, 75 / 25,
with random_state 0. Training is deterministic (seeded, one thread) and takes a
few seconds here; the weights are cached under the chipfit cache directory
(`digits-cnn-v1.pt`) and are regenerated with `chipfit emulate digits-cnn --retrain ...`
or by deleting the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from chipfit.models.vision import DigitsCNN
from chipfit.models.weights import cached_weights

__all__ = ["DigitsData", "digits_cnn_pretrained", "load_digits_data", "train_digits_cnn"]

WEIGHTS_FILE = "digits-cnn-v1.pt"
EPOCHS = 40
SEED = 0


@dataclass(frozen=True)
class DigitsData:
    x_train: torch.Tensor  # (N, 1, 8, 8) float32 in [0, 1]
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_data() -> DigitsData:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise RuntimeError(
            "the digits data comes from scikit-learn: pip install 'chipfit[data]' (or scikit-learn)"
        ) from None
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)

    def images(a: object) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0

    return DigitsData(images(xtr), torch.tensor(ytr), images(xte), torch.tensor(yte))


def train_digits_cnn(data: DigitsData | None = None, epochs: int = EPOCHS, seed: int = SEED) -> DigitsCNN:
    """Adam, lr 3e-3, batch 64, `epochs` passes, seeded shuffles, one thread (deterministic)."""
    data = data or load_digits_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        loss_fn = nn.CrossEntropyLoss()
        n = len(data.x_train)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, 64):
                idx = perm[i : i + 64]
                opt.zero_grad()
                loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def digits_cnn_pretrained(retrain: bool = False) -> DigitsCNN:
    """The trained CNN: from the cache, or trained now (and cached, written atomically)."""
    return cached_weights(WEIGHTS_FILE, DigitsCNN, train_digits_cnn, retrain)
