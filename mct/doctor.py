"""`mct doctor`: what this machine offers (Python, torch build, CPU, GPUs) and what batch fits."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import torch

from mct.config import Config, ModelConfig
from mct.device import bf16_supported, cuda_unavailable_reason, mps_available, resolve_device

BYTES_PER_PARAM_TRAINING = 16  # fp32 weights + grads + AdamW's two moments


def available_cpu_memory() -> int:
    """Bytes of memory the OS says are available (MemAvailable), or total memory as a fallback."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def count_parameters(model: ModelConfig) -> int:
    """Unique parameters of a model built from `model` (counted on the meta device: nothing is allocated)."""
    from mct.model import count_parameters as count

    return count(model)


def activation_bytes_per_example(model: ModelConfig, seq_len: int, bytes_per_value: int) -> int:
    """Activations kept for backward by one example of `seq_len` tokens (an estimate, with slack)."""
    gated = model.ffn_type in ("geglu", "swiglu")
    per_token_layer = 10 * model.d_model + (3 if gated else 2) * model.d_ff + 2 * model.num_heads * seq_len
    logits = 3 * model.vocab_size  # logits, softmax and its gradient
    values = seq_len * (model.num_layers * per_token_layer + logits)
    return int(values * bytes_per_value * 1.25)


@dataclass
class BatchEstimate:
    parameters: int
    static_bytes: int
    per_example_bytes: int
    free_bytes: int
    max_batch_size: int
    seq_len: int
    device: str


def estimate_max_batch(config: Config, device: torch.device, free_bytes: int) -> BatchEstimate:
    """Largest training batch whose weights, optimizer state and activations fit 90% of free memory."""
    params = count_parameters(config.model)
    seq_len = min(config.data.max_seq_len, config.model.max_seq_len)
    bytes_per_value = 2 if device.type == "cuda" and config.train.precision != "fp32" else 4
    static = params * BYTES_PER_PARAM_TRAINING
    per_example = max(1, activation_bytes_per_example(config.model, seq_len, bytes_per_value))
    budget = int(free_bytes * 0.9) - static
    return BatchEstimate(params, static, per_example, free_bytes, max(0, budget // per_example), seq_len, str(device))


def gpu_info(index: int) -> dict:
    props = torch.cuda.get_device_properties(index)
    free, total = torch.cuda.mem_get_info(index)
    return {
        "index": index,
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "total_memory_bytes": int(total),
        "free_memory_bytes": int(free),
        "bf16": bool(torch.cuda.is_bf16_supported()),
        "multiprocessors": props.multi_processor_count,
    }


def matmul_check(device: torch.device, size: int = 1024) -> dict:
    """Run a real matrix product on `device` and compare it with the CPU's; returns timing and error."""
    a = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    b = torch.randn(size, size, generator=torch.Generator().manual_seed(1))
    expected = a @ b
    a_dev, b_dev = a.to(device), b.to(device)
    (a_dev @ b_dev)  # warm up kernels
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = a_dev @ b_dev
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    error = (result.float().cpu() - expected).abs().max().item() / expected.abs().max().item()
    return {"device": str(device), "size": size, "seconds": seconds,
            "gflops": 2 * size**3 / max(seconds, 1e-9) / 1e9, "max_relative_error": error, "ok": error < 1e-2}


def collect_report(config: Config, device_spec: str = "auto", run_check: bool = False) -> dict:
    """Everything `mct doctor` shows, as plain data. Never raises for a missing GPU: it reports it."""
    cuda_ok = torch.cuda.is_available()
    report: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_build": f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_memory_available_bytes": available_cpu_memory(),
        "cuda_available": cuda_ok,
        "cuda_reason": None if cuda_ok else cuda_unavailable_reason(),
        "mps_available": mps_available(),
        "devices": [gpu_info(i) for i in range(torch.cuda.device_count())] if cuda_ok else [],
        "cpu_bf16": bf16_supported(torch.device("cpu")),
    }
    device = resolve_device(device_spec)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = report["cpu_memory_available_bytes"]
    estimate = estimate_max_batch(config, device, free)
    report["estimate"] = {
        "device": estimate.device,
        "parameters": estimate.parameters,
        "seq_len": estimate.seq_len,
        "static_bytes": estimate.static_bytes,
        "per_example_bytes": estimate.per_example_bytes,
        "free_bytes": estimate.free_bytes,
        "max_batch_size": estimate.max_batch_size,
        "configured_batch_size": config.train.batch_size,
    }
    if run_check:
        report["matmul_check"] = matmul_check(device)
    return report


def check_training_fits(config: Config, device_spec: str | None = None) -> None:
    """Raise MctError when the weights, gradients and optimizer state of `config`'s model alone exceed
    the memory free on its device: refused before anything is allocated, not an allocator crash later."""
    from mct.errors import MctError

    device = resolve_device(device_spec or config.train.device)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_cpu_memory()
    params = count_parameters(config.model)
    needed = params * BYTES_PER_PARAM_TRAINING
    if free and needed > free:
        raise MctError(
            f"a model of {params:,} parameters needs about {needed / 2**30:,.1f} GiB for its weights, gradients "
            f"and optimizer state, but {free / 2**30:,.1f} GiB is free on {device}; make model.d_model, "
            "model.num_layers or model.d_ff smaller"
        )
