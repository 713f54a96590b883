"""The pruning plan: G and the row/column permutations of every prunable matrix.

A plain, serialisable object (pgb.json). Everything downstream of planning (masking,
compensation, the grouped module, the ONNX exporter) reads only this.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

FORMAT_VERSION = 1


class PlanError(ValueError):
    """pgb.json is malformed or does not describe the weights it sits beside."""


@dataclass
class MatrixPlan:
    name: str
    layer: int
    kind: str
    shape: tuple[int, int]  # (M, N) = (in, out), y = x W
    groups: int  # 0 = dropped, 1 = dense, >= 2 = block-diagonal under the permutations
    row_perm: list[int]  # pr: input features in the order the groups took them
    col_perm: list[int]  # pc: output features in the order the groups took them
    captured: float | None = None  # importance inside the blocks / importance of the matrix

    @property
    def kept(self) -> int:
        m, n = self.shape
        return 0 if self.groups == 0 else m * n // self.groups

    @property
    def block(self) -> tuple[int, int]:
        m, n = self.shape
        return m // self.groups, n // self.groups

    def group_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Group index of every input row and output column (original order)."""
        m, n = self.shape
        br, bc = self.block
        rows = torch.empty(m, dtype=torch.long)
        cols = torch.empty(n, dtype=torch.long)
        rows[torch.tensor(self.row_perm)] = torch.arange(m) // br
        cols[torch.tensor(self.col_perm)] = torch.arange(n) // bc
        return rows, cols

    def mask(self) -> torch.Tensor:
        """Boolean (M, N): True where W* may be non-zero (re-permuted block diagonal)."""
        if self.groups == 0:
            return torch.zeros(self.shape, dtype=torch.bool)
        rows, cols = self.group_ids()
        return rows[:, None] == cols[None, :]

    def validate(self) -> None:
        m, n = self.shape
        if self.groups < 0 or (self.groups and (m % self.groups or n % self.groups)):
            raise PlanError(f"{self.name}: G={self.groups} does not divide shape {m}x{n}")
        for what, perm, size in (("row_perm", self.row_perm, m), ("col_perm", self.col_perm, n)):
            if sorted(perm) != list(range(size)):
                raise PlanError(f"{self.name}: {what} is not a permutation of 0..{size - 1}")


@dataclass
class Plan:
    matrices: list[MatrixPlan]
    meta: dict = field(default_factory=dict)  # how it was made: target, gmax, nperm, tau, ...

    def __getitem__(self, name: str) -> MatrixPlan:
        for mp in self.matrices:
            if mp.name == name:
                return mp
        raise KeyError(name)

    @property
    def kept(self) -> int:
        return sum(mp.kept for mp in self.matrices)

    @property
    def total(self) -> int:
        return sum(mp.shape[0] * mp.shape[1] for mp in self.matrices)

    @property
    def ratio(self) -> float:
        """Fraction of prunable weights removed."""
        return 1.0 - self.kept / self.total

    def masks(self) -> dict[str, torch.Tensor]:
        return {mp.name: mp.mask() for mp in self.matrices}

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "meta": self.meta,
                "matrices": [asdict(mp) for mp in self.matrices]}

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        try:
            if data.get("format_version") != FORMAT_VERSION:
                raise PlanError(f"unsupported pgb.json format_version {data.get('format_version')!r}")
            mats = [MatrixPlan(**{**m, "shape": tuple(m["shape"])}) for m in data["matrices"]]
        except (KeyError, TypeError, AttributeError) as e:
            raise PlanError(f"pgb.json is malformed: {e}") from None
        for mp in mats:
            mp.validate()
        return cls(mats, data.get("meta", {}))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PlanError(f"cannot read {path}: {e}") from None
        return cls.from_json(data)


def uniform_plan(refs, groups: int, seed: int = 0) -> Plan:
    """The same G for every matrix (MatrixRef-like: name, layer, kind, shape) under random
    permutations: the structure a grouped model's speed depends on, for benchmarks that
    need neither trained weights nor data."""
    gen = torch.Generator().manual_seed(seed)
    return Plan([MatrixPlan(r.name, r.layer, r.kind, r.shape, groups,
                            torch.randperm(r.shape[0], generator=gen).tolist(),
                            torch.randperm(r.shape[1], generator=gen).tolist()) for r in refs],
                {"method": "uniform", "groups": groups, "seed": seed})
