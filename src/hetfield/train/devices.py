"""The training device: ``--device`` resolved and checked before anything is written, torch set up."""

from __future__ import annotations

from hetfield.errors import ConfigError


def resolve_device(name: str = "auto"):
    """``auto`` → CUDA when available, else CPU. A CUDA device is tried (one tiny allocation) so
    that an unusable one is a :class:`ConfigError` before anything is written."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        try:
            torch.zeros(1, device=device)
        except Exception as err:  # an invalid ordinal, a busy or broken GPU: torch raises several types
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(
                f"--device {name}: cannot use it ({reason}); this machine has {torch.cuda.device_count()} CUDA device(s): choose cuda:0… or cpu"
            ) from None
    return device


def resolve_precision(amp, device) -> str:
    """``bf16-mixed`` or ``fp32``: ``amp`` "auto" is bf16 on a GPU that has it and fp32 elsewhere
    (CPU bf16 is slower than fp32); ``True`` asks for bf16 on any device (CPU autocast included)."""
    import torch

    if amp == "auto":
        return "bf16-mixed" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp: {torch.cuda.get_device_name(device)} has no bf16; train with --no-amp")
    return "bf16-mixed" if amp else "fp32"


def autocast(device, precision: str):
    """The networks' autocast for ``precision`` (phases and features stay fp32: imaging.precision)."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def to_device(batch, device):
    """``batch`` on ``device``; on CUDA from pinned memory with asynchronous copies, so that the
    host does not wait for the GPU to finish the previous step."""
    if device.type != "cuda":
        return batch.to(device)
    import dataclasses

    import torch

    return dataclasses.replace(batch, **{
        f.name: v.pin_memory().to(device, non_blocking=True)
        for f in dataclasses.fields(batch) if isinstance(v := getattr(batch, f.name), torch.Tensor)
    })


def set_up_torch(device, threads: int | None, seed: int) -> None:
    """Threads, TF32 matrix products on CUDA, and the global seed (the model's initialisation)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed)
