"""Devices a sweep can run on: discovery and the --gpu selection."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bench.errors import BenchError, SensorError


@dataclass(frozen=True)
class Device:
    """One device a cell runs on.

    Attributes:
        kind: ``cuda`` or ``cpu``.
        index: NVML index (as nvidia-smi shows it) for GPUs; None for the CPU.
        name: model name.
        uuid: GPU UUID; None for the CPU.
        info: provenance (driver, power limit, clocks, memory, MIG mode; CPU model).
    """

    kind: str
    index: int | None
    name: str
    uuid: str | None = None
    info: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """Short label for tables and cell ids: ``gpu0``, ``gpu0+1`` (a group) or ``cpu``."""
        if self.kind != "cuda":
            return "cpu"
        if len(self.members) > 1:
            return "gpu" + "+".join(str(m.index) for m in self.members)
        return f"gpu{self.index}"

    @property
    def members(self) -> list[Device]:
        """The GPUs a multi-GPU cell runs on (see :func:`group`); ``[self]`` for one device."""
        ms = self.info.get("members")
        if not ms:
            return [self]
        return [Device.from_dict(m) for m in ms]

    @property
    def gpu_index(self) -> int:
        """The NVML index of a GPU.

        Raises:
            ValueError: the device is the CPU.
        """
        if self.index is None:
            raise ValueError(f"{self.label} has no NVML index")
        return self.index

    @property
    def torch_device(self) -> str:
        """The torch device the model runs on.

        GPU indices match NVML's with CUDA_DEVICE_ORDER=PCI_BUS_ID; a worker process,
        which sees only its GPU, sets ``info["torch_device"]`` (``cuda:0``).
        """
        if self.info.get("torch_device"):
            return self.info["torch_device"]
        return f"cuda:{self.index}" if self.kind == "cuda" else "cpu"

    def to_dict(self) -> dict:
        info = {k: v for k, v in self.info.items() if k != "torch_device"}
        return {"kind": self.kind, "index": self.index, "name": self.name, "uuid": self.uuid,
                **info}

    @classmethod
    def from_dict(cls, d: dict) -> Device:
        """The inverse of :meth:`to_dict`."""
        info = {k: v for k, v in d.items() if k not in ("kind", "index", "name", "uuid")}
        return cls(d["kind"], d.get("index"), d.get("name", ""), d.get("uuid"), info)


def group(members: list[Device]) -> Device:
    """One device standing for several GPUs that run one cell together.

    Its index and name are the first GPU's, its uuid the members' joined by commas (what
    ``CUDA_VISIBLE_DEVICES`` takes), its label ``gpu0+1``; ``members`` gives them back.
    A single GPU is its own group.
    """
    if len(members) == 1:
        return members[0]
    if any(m.kind != "cuda" for m in members):
        raise ValueError("only GPUs form a group")
    first = members[0]
    info = {k: v for k, v in first.info.items() if k != "torch_device"}
    info["members"] = [m.to_dict() for m in members]
    return Device("cuda", first.index, first.name, ",".join(str(m.uuid) for m in members),
                  info)


@dataclass(frozen=True)
class Inventory:
    """What this machine has: GPUs (maybe none, with the reason) and the CPU.

    ``skipped`` holds the GPUs that exist but cannot be measured, each as one line
    (``GPU 1: ...``): a GPU whose NVML handle fails, one in MIG mode.
    """

    gpus: tuple[Device, ...]
    gpu_reason: str | None
    cpu: Device
    skipped: tuple[str, ...] = ()


def cpu_device() -> Device:
    """The host CPU as a device."""
    from bench.devices.cpu import cpu_info

    info = cpu_info()
    return Device(kind="cpu", index=None, name=info["model"], info=info)


def discover() -> Inventory:
    """Find the GPUs (through NVML) and the CPU. Never raises for a missing GPU.

    A GPU that cannot be measured is skipped with a one-line reason and the others are
    kept: one whose NVML handle, UUID or name fails, and one in MIG mode (CUDA then sees
    its instances, not the GPU, and NVML's energy counter covers the whole board).
    """
    # CUDA numbers devices fastest-first unless told otherwise; NVML by PCI bus id.
    # Making CUDA follow the bus order keeps `--gpu 2` the GPU nvidia-smi calls 2.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    from bench.devices import nvml

    gpus: list[Device] = []
    skipped: list[str] = []
    reason: str | None = None
    try:
        found, failed = nvml.discover_each()
    except SensorError as exc:
        found, failed, reason = [], [], str(exc)
    skipped.extend(_skipped_line(i, why) for i, why in failed)
    for g in found:
        if g.mig_mode:
            skipped.append(f"GPU {g.index}: MIG mode is on (CUDA sees its instances, not the "
                           "GPU); turn MIG off to measure it")
            continue
        info = g.to_dict()
        for k in ("index", "uuid", "name"):
            info.pop(k)
        gpus.append(Device("cuda", g.index, g.name, g.uuid, info))
    if not gpus and reason is None:
        reason = "NVML reports no GPU" if not skipped else "no GPU can be measured"
    return Inventory(tuple(gpus), reason, cpu_device(), tuple(skipped))


def _skipped_line(index: int, why: str) -> str:
    """``GPU i: why``, on one line, without NVML's own ``GPU i`` prefix a second time."""
    own = f"GPU {index}"
    if why.startswith(own) and why[len(own):len(own) + 1] in (":", " "):
        why = why[len(own):].lstrip(": ")
    return f"{own}: {' '.join(why.split())}"


def parse_gpu_spec(spec: str | list[int]) -> str | list[int]:
    """Parse ``--gpu``: ``all``, ``auto``, ``none``/``cpu``, or a list of indices ``0,2``.

    An already parsed value (a list of indices or a keyword) comes back as it is.

    Raises:
        BenchError: malformed value.
    """
    if isinstance(spec, list):
        if not spec or any(not isinstance(i, int) or i < 0 for i in spec) or \
                len(set(spec)) != len(spec):
            raise BenchError(f"invalid GPU indices {spec}: distinct integers 0 or more")
        return spec
    s = spec.strip().lower()
    if s in ("all", "auto", "none", "cpu"):
        return "none" if s == "cpu" else s
    try:
        indices = [int(p) for p in s.split(",") if p.strip() != ""]
    except ValueError:
        raise BenchError(
            f"invalid --gpu value {spec!r}: use all, auto, none or indices like 0,2") from None
    if not indices or any(i < 0 for i in indices):
        raise BenchError(f"invalid --gpu value {spec!r}: indices must be 0 or more")
    if len(set(indices)) != len(indices):
        raise BenchError(f"invalid --gpu value {spec!r}: an index appears twice")
    return indices


def select(spec: str | list[int],
           inventory: Inventory) -> tuple[list[Device], str | None]:
    """The devices ``--gpu spec`` names, and a one-line notice for the user (or None).

    ``auto`` (the default) takes every GPU, or the CPU where there is none, silently;
    ``all`` takes every GPU and says so when it falls back to the CPU; ``none`` runs on
    the CPU; indices must exist. GPUs that exist but were skipped (see :func:`discover`)
    are named in the notice; if every GPU was skipped, ``auto`` and ``all`` stop rather
    than measure the CPU in their place.

    Raises:
        BenchError: an index that does not exist or was skipped; every GPU skipped.
    """
    parsed = parse_gpu_spec(spec)
    if parsed == "none":
        return [inventory.cpu], None
    skipped = "; ".join(inventory.skipped) or None
    if isinstance(parsed, str):  # all | auto
        if inventory.gpus:
            return list(inventory.gpus), (f"skipped {skipped}" if skipped else None)
        if skipped:
            raise BenchError(f"no GPU can be measured ({skipped}); --gpu none measures "
                             "the CPU")
        notice = None
        if parsed == "all":
            notice = f"no CUDA GPU found ({inventory.gpu_reason}); running on the CPU"
        return [inventory.cpu], notice
    by_index = {g.gpu_index: g for g in inventory.gpus}
    missing = [i for i in parsed if i not in by_index]
    if missing:
        why = [s for s in inventory.skipped if s.startswith(f"GPU {missing[0]}:")]
        if why:
            raise BenchError(f"--gpu {','.join(map(str, parsed))}: cannot measure {why[0]}")
        have = (f"this machine has GPUs {sorted(by_index)}" if by_index
                else f"this machine has no CUDA GPU ({inventory.gpu_reason})")
        raise BenchError(f"--gpu {','.join(map(str, parsed))}: no GPU {missing[0]}; {have}")
    return [by_index[i] for i in parsed], None
