"""Device resolution, mixed-precision choice and seeding."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import torch

from mct.errors import MctError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


def cuda_unavailable_reason() -> str:
    """Why CUDA cannot be used here, in words a user can act on."""
    if torch.version.cuda is None:
        return (
            f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build "
            "(see docs/gpu.md) or use the cpu device"
        )
    return (
        f"torch was built for CUDA {torch.version.cuda} but no usable GPU or driver was found "
        "(check nvidia-smi); use the cpu device"
    )


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; explicit requests are checked, never silently changed."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not mps_available():
            raise MctError("device mps: Apple MPS is not available on this machine; use cpu")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        index_text = spec.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise MctError(f"device {spec!r}: bad GPU index; use cuda or cuda:N (one of {DEVICE_CHOICES})")
        if not torch.cuda.is_available():
            raise MctError(f"device {spec!r}: CUDA is not available: {cuda_unavailable_reason()}")
        index = int(index_text)
        if index >= torch.cuda.device_count():
            raise MctError(
                f"device {spec!r}: there are only {torch.cuda.device_count()} GPU(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    raise MctError(f"device {spec!r} is not a device; use one of {DEVICE_CHOICES}")


@dataclass(frozen=True)
class Precision:
    """How to run the forward pass: `dtype` None means plain fp32; `use_scaler` for fp16 training."""

    name: str  # "fp32" | "bf16" | "fp16"
    dtype: torch.dtype | None
    use_scaler: bool

    def autocast(self, device: torch.device):
        """Context manager that runs the forward pass in this precision on `device`."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def choose_precision(device: torch.device, requested: str = "auto") -> Precision:
    """bf16 autocast where the GPU supports it, else fp16 with a GradScaler; fp32 on CPU unless asked."""
    requested = requested.lower()
    if requested == "auto":
        if device.type == "cuda":
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            requested = "fp32"
    if requested == "fp32":
        return Precision("fp32", None, False)
    if requested == "bf16":
        if not bf16_supported(device):
            raise MctError(f"precision bf16 is not supported on {device}; use fp16 or fp32 (train.precision)")
        return Precision("bf16", torch.bfloat16, False)
    if requested == "fp16":
        if device.type not in ("cuda", "mps"):
            raise MctError(f"precision fp16 needs a GPU, not {device}; use fp32 or bf16 (train.precision)")
        return Precision("fp16", torch.float16, device.type == "cuda")
    raise MctError(f"precision {requested!r} is not one of auto, fp32, bf16, fp16 (train.precision)")


def seed_everything(seed: int) -> None:
    """Seed Python and torch (CPU and every GPU) so runs repeat."""
    random.seed(seed)
    torch.manual_seed(seed)
