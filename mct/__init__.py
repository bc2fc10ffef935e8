"""mct: train compact transformers on arithmetic and take them apart.

`mct.load("ckpt.pt")` gives a Predictor for notebooks and scripts (see docs/interpretability.md).
"""

__version__ = "0.1.0"


def load(path, device: str = "auto"):
    """Load a checkpoint as a `Predictor` with `.answer(...)`, `.model` and `.tokenizer`."""
    from mct.predictor import Predictor

    return Predictor.from_checkpoint(path, device=device)


__all__ = ["load", "__version__"]
