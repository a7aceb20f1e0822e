"""Data-parallel training under ``torchrun`` (``WORLD_SIZE > 1``): one process per GPU (NCCL), or per
CPU share (gloo).

The scheme keeps a W-process run the same computation as one process:

* ``--batch-size`` is the global batch. Every rank draws the same epoch order, cuts it into the same
  chunks, and trains on its share ``chunk[rank::W]`` (read by itself from the memory-mapped cache).
  Its loss is scaled by ``W · P_rank / P_chunk``, so DDP's gradient average is the gradient of the
  chunk's mean loss. A rank whose share is empty (a last chunk smaller than W) steps with one
  particle at weight 0: every rank takes every step.
* The networks are wrapped in DistributedDataParallel. The per-particle and per-image tables
  (latents, class scores, poses) are not: each rank's sparse gradient covers only its own rows, so
  the rows are all-gathered and every rank applies the same lazy-Adam step to the union — the
  tables and their moments stay identical on every rank, as in one process.
* The latent noise of the whole chunk is drawn from the one CPU generator on every rank (each keeps
  its rows), and the class posteriors of the chunk are all-gathered: generator, tables and posteriors
  are the same everywhere, so rank 0's checkpoint resumes exactly, with any number of processes.
* Rank 0 alone writes the run directory (lock, config, log, metrics, checkpoints, latents).
* Stop requests are decided together (a max over the ranks' signal flags, on a host-side gloo
  group) at the training loop's checks, so every rank stops at the same step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    host_group: Any = None  # gloo: decisions and text that live on the host

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- set-up ---------------------------------------------------------------------------------
    @classmethod
    def from_env(cls) -> "Distributed":
        ws = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if ws <= 1:
            return cls()
        return cls(world_size=ws, rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    def device_name(self, name: str) -> str:
        """Under torchrun every rank takes its own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
        import torch

        if not self.enabled or name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return name
        return f"cuda:{self.local_rank}"

    def start(self, device) -> None:
        import torch.distributed as dist

        if not self.enabled:
            return
        if device.type == "cuda":  # before NCCL starts: its communicators bind to the current device
            import torch

            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
        self.host_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD

    def close(self) -> None:
        import torch.distributed as dist

        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    # -- host-side collectives ------------------------------------------------------------------
    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier(group=self.host_group)

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank (bytes in a tensor: no pickle)."""
        if not self.enabled:
            return text
        import torch
        import torch.distributed as dist

        data = torch.tensor(list(text.encode()) if self.is_main else [], dtype=torch.uint8)
        size = torch.tensor([data.numel()], dtype=torch.long)
        dist.broadcast(size, 0, group=self.host_group)
        buf = data if self.is_main else torch.zeros(int(size), dtype=torch.uint8)
        dist.broadcast(buf, 0, group=self.host_group)
        return bytes(buf.tolist()).decode()

    def agreed_signal(self, flag: dict) -> int:
        """The largest signal any rank has received (0: none), the same on every rank."""
        if not self.enabled:
            return int(flag.get("signum") or 0)
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(flag.get("signum") or 0)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.host_group)
        return int(t)

    # -- device collectives ---------------------------------------------------------------------
    def all_sum(self, x):
        """A summed copy of ``x`` over the ranks (``x`` itself without torchrun)."""
        if not self.enabled:
            return x
        import torch.distributed as dist

        y = x.clone()
        dist.all_reduce(y)
        return y

    def broadcast_(self, x) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.broadcast(x, 0)

    def gather_rows(self, rows, counts: list[int]):
        """Every rank's ``rows (counts[rank], ...)``, concatenated in rank order (padded all-gather)."""
        import torch
        import torch.distributed as dist

        width = max(max(counts), 1)
        pad = rows.new_zeros((width,) + tuple(rows.shape[1:]))
        pad[: rows.shape[0]] = rows
        parts = [torch.empty_like(pad) for _ in range(self.world_size)]
        dist.all_gather(parts, pad)
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    # -- the step ---------------------------------------------------------------------------------
    def wrap(self, model, device):
        """``model`` with its networks in DDP (the tables are left to :meth:`sync_table_grads`)."""
        if not self.enabled:
            return model
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # Empty parameters (a one-layer field's hidden biases, shape (K, 0, 1, h)) take no part in any
        # loss, and DDP refuses a parameter without a gradient at its second step.
        empty = [name for name, p in model.named_parameters() if p.numel() == 0]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(table_rows(model)) + empty)
        # The buffers (lattice, amplitude profile) are the same on every rank: no sync per forward.
        quiet = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters else "broadcast_buffers"
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **{quiet: False})

    def shares(self, loader, epoch: int, first: int):
        """``(shares, my batch, loss scale)`` per global chunk of ``epoch`` from particle ``first``."""
        order = loader.order(epoch)
        for i in range(first, len(order), loader.batch_size):
            chunk = order[i : i + loader.batch_size]
            shares = [chunk[r :: self.world_size] for r in range(self.world_size)]
            mine = shares[self.rank]
            scale = self.world_size * len(mine) / len(chunk)
            yield shares, loader.make_batch(mine if len(mine) else chunk[:1]), scale

    def sync_table_grads(self, model, shares, loader) -> None:
        """Every rank's sparse table gradients on every rank (see the module docstring)."""
        import torch

        images = [_images_of(loader, s) for s in shares]
        for name, per in table_rows(model).items():
            p = model.get_parameter(name)
            if p.grad is None:
                continue
            rows = [torch.as_tensor(s if per == "particle" else im, dtype=torch.long, device=p.device) for s, im in zip(shares, images)]
            mine = rows[self.rank]
            values = torch.index_select(p.grad.coalesce(), 0, mine).to_dense() if len(mine) else p.new_zeros((0, p.shape[1]))
            gathered = self.gather_rows(values, [len(r) for r in rows]) / self.world_size
            p.grad = torch.sparse_coo_tensor(torch.cat(rows)[None], gathered, p.shape, check_invariants=False)  # rows valid by construction

    def gather_responsibility(self, resp, shares, mine) -> None:
        """Write every rank's class posteriors of the chunk into ``resp`` (the same on every rank)."""
        import torch

        counts = [len(s) for s in shares]
        gathered = self.gather_rows(mine[: counts[self.rank]], counts)
        resp.index_copy_(0, torch.as_tensor(np.concatenate(shares), dtype=torch.long, device=resp.device), gathered.to(resp.dtype))


def table_rows(model) -> dict[str, str]:
    """The table parameters and what their rows are: ``particle`` or ``image``."""
    out = {}
    if model.latents is not None:
        out["latents.z.weight"] = "particle"
    if model.scores is not None:
        out["scores.table.weight"] = "particle"
    if model.poses is not None:
        out["poses.rot6d.weight"] = out["poses.origin.weight"] = "image"
    return out


def _images_of(loader, particles) -> np.ndarray:
    counts = loader.counts[particles]
    starts = loader.offsets[particles]
    return (np.repeat(starts, counts) + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int64)
