import pytest
import torch

from mct.device import choose_precision, resolve_device
from mct.errors import MctError


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_says_why_and_what_to_do():
    with pytest.raises(MctError) as info:
        resolve_device("cuda")
    message = str(info.value)
    assert "CUDA is not available" in message and "use the cpu device" in message and "\n" not in message


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu"])
def test_unknown_devices_are_refused_without_naming_a_cli_flag(spec):
    if spec.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("only meaningful without CUDA")
    with pytest.raises(MctError) as info:
        resolve_device(spec)
    assert "--" not in str(info.value) and repr(spec) in str(info.value)


@pytest.mark.parametrize("requested", ["fp16", "fp8"])
def test_precision_errors_name_the_config_key_not_a_flag(requested):
    with pytest.raises(MctError) as info:
        choose_precision(torch.device("cpu"), requested)
    assert "train.precision" in str(info.value) and "--" not in str(info.value)


def test_precision_on_cpu():
    cpu = torch.device("cpu")
    assert choose_precision(cpu, "auto").name == "fp32"
    assert choose_precision(cpu, "bf16").dtype == torch.bfloat16
    with pytest.raises(MctError, match="fp16 needs a GPU"):
        choose_precision(cpu, "fp16")


def test_fp32_autocast_is_a_no_op():
    precision = choose_precision(torch.device("cpu"), "fp32")
    with precision.autocast(torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
