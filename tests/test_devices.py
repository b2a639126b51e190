"""The one device resolver (prnseg.devices) and the commands that use it."""

import pytest

from conftest import run_python_without_torch
from prnseg.bench.errors import BenchError
from prnseg.devices import Device, DeviceError, parse_device, resolve_device
from prnseg.errors import ConfigError, PrnsegError


def gpus(n):
    return lambda: n


def test_auto_cpu_and_cuda_resolve_against_the_gpus_the_runtime_sees():
    assert resolve_device("auto", gpu_count=gpus(0)) == Device("cpu", 0)
    assert resolve_device(None, gpu_count=gpus(2)) == Device("cuda", 0)
    assert resolve_device(" CPU ", gpu_count=gpus(2)) == ("cpu", 0)
    assert resolve_device("cuda:1", gpu_count=gpus(2)) == ("cuda", 1)
    d = resolve_device("cuda", gpu_count=gpus(1))
    assert (str(d), d.short) == ("cuda:0", "cuda")
    assert (str(Device("cuda", 3)), Device("cuda", 3).short, str(Device("cpu")), Device("cpu").short) == \
        ("cuda:3", "cuda:3", "cpu", "cpu")
    # unchecked (a runtime that decides later): any index passes, the syntax is still checked
    assert resolve_device("cuda:7", gpu_count=gpus(0), check=False) == ("cuda", 7)


def test_every_refusal_is_one_line_in_the_callers_error_class():
    for spec, n, message in (
            ("tpu", 1, "--device 'tpu': use auto, cpu, cuda or cuda:N"),
            ("cpu:1", 1, "--device 'cpu:1': use auto, cpu, cuda or cuda:N"),
            ("cuda", 0, "--device cuda: PyTorch sees no CUDA GPU on this machine; use --device cpu (or auto)"),
            ("cuda:2", 2, "--device cuda:2: this machine has 2 CUDA device(s); use cuda:0..cuda:1")):
        for error in (DeviceError, BenchError, ConfigError):
            with pytest.raises(error) as info:
                resolve_device(spec, gpu_count=gpus(n), error=error)
            assert str(info.value) == message and isinstance(info.value, PrnsegError)
    with pytest.raises(DeviceError, match="use auto, cpu, cuda or cuda:N"):
        parse_device("auto")


def test_the_predictor_and_training_resolve_through_it():
    from prnseg.serve.predictor import BackendError, Predictor
    from prnseg.training.distributed import select_device

    assert Predictor.resolve_device("cuda:1") == ("cuda", 1)  # ONNX Runtime decides later (CPU fallback)
    with pytest.raises(BackendError, match="^device 'gpu' unknown; use auto, cpu, cuda or cuda:N$"):
        Predictor.resolve_device("gpu")
    assert str(select_device(" CPU ")) == "cpu"
    with pytest.raises(ConfigError, match="^--device 'tpu': use auto"):
        select_device("tpu")


def test_training_gives_a_cuda_device_its_index_so_set_device_accepts_it(monkeypatch):
    """``torch.cuda.set_device`` refuses a bare ``cuda`` (found on a GPU: ``--device cuda`` failed
    before the first step); a machine with two GPUs stands in here."""
    import torch

    from prnseg.training import distributed

    monkeypatch.setattr(distributed, "resolve_device",
                        lambda spec, error: resolve_device(spec, gpu_count=lambda: 2, error=error))
    assert distributed.select_device("cuda") == torch.device("cuda", 0)
    assert distributed.select_device(" CUDA:1 ") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")   # torchrun's second process on this machine
    assert distributed.select_device("cuda") == torch.device("cuda", 1)
    assert distributed.select_device("cuda:0") == torch.device("cuda", 0)
    assert distributed.select_device("cpu") == torch.device("cpu")
    assert all(distributed.select_device(s).index is not None for s in ("cuda", "cuda:1"))


def test_the_resolver_imports_torch_only_when_asked_about_pytorch_gpus():
    proc = run_python_without_torch(
        "from prnseg.devices import resolve_device\n"
        "print(resolve_device('cuda:1', gpu_count=lambda: 2), resolve_device('cpu'))\n"
        "try:\n"
        "    resolve_device('auto')\n"
        "except ImportError as exc:\n"
        "    print('needs torch:', exc)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["cuda:1 cpu", "needs torch: torch is not installed here"]
