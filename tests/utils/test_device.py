"""plmkit.utils.device: device and autocast-dtype resolution."""
import pytest
import torch

from plmkit.errors import ConfigError
from plmkit.utils import device
from plmkit.utils.device import autocast, resolve_device, resolve_precision


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="'gpu0' is not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="precision must be one of"):
        resolve_precision("fp16", cpu)


def test_autocast_computes_in_the_resolved_dtype():
    cpu, a = torch.device("cpu"), torch.randn(4, 4)
    with autocast(cpu, torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(cpu, None):
        assert (a @ a).dtype == torch.float32


def test_a_batch_goes_to_the_device_with_what_is_not_a_tensor():
    from plmkit.utils.device import to_device
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "n": 5}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["n"] == 5 and torch.equal(moved["input_ids"], batch["input_ids"])


def test_cpuinfo_reads_the_first_processors_line(proc_cpuinfo):
    cpuinfo = proc_cpuinfo
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx512f\n\n"
                       "processor\t: 1\nvendor_id\t: Other\n")
    assert device.cpuinfo("vendor_id") == "GenuineIntel"
    assert device.cpuinfo("flags") == "fpu avx512f"
    assert device.cpuinfo("bogomips") is None
    cpuinfo.unlink()
    assert device.cpuinfo("vendor_id") is None
