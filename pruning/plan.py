"""The pruning plan: G and the row/column permutations of every prunable matrix.

A plain, serialisable object (pgb.json). Everything downstream of planning (masking,
compensation, the grouped module, the ONNX exporter) reads only this.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .bert import KINDS
from .jsonfile import read_object

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

    def in_order(self, groups: int, shape: tuple[int, int] | None = None) -> MatrixPlan:
        """This matrix with identity orders, `groups` and `shape` (default its own): how the
        exporter plans a linear it writes dense, or sliced to fewer rows or columns."""
        m, n = shape or self.shape
        return MatrixPlan(self.name, self.layer, self.kind, (m, n), groups, list(range(m)), list(range(n)))

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

    @classmethod
    def from_json(cls, entry, index: int) -> MatrixPlan:
        """One pgb.json entry, with every field's JSON type checked (bool is not an int,
        2.0 is not a group count), then validate()d."""
        where = f"pgb.json matrices[{index}]"
        if not isinstance(entry, dict):
            raise PlanError(f"{where} is a JSON {type(entry).__name__}, not an object")
        required = {f.name for f in fields(cls) if f.name != "captured"}
        unknown, missing = set(entry) - {f.name for f in fields(cls)}, required - set(entry)
        if unknown or missing:
            raise PlanError(f"{where}: " + "; ".join(
                ([f"unknown field(s) {sorted(unknown)}"] if unknown else [])
                + ([f"missing field(s) {sorted(missing)}"] if missing else [])))
        name = entry["name"]
        if not isinstance(name, str) or not name:
            raise PlanError(f"{where}: name must be a non-empty string")
        where = f"pgb.json {name}"
        shape = entry["shape"]
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(d) and d > 0 for d in shape)):
            raise PlanError(f"{where}: shape must be two positive integers, got {shape!r:.60}")
        for key in ("layer", "groups"):
            if not (_is_int(entry[key]) and entry[key] >= 0):
                raise PlanError(f"{where}: {key} must be a non-negative integer, got {entry[key]!r:.60}")
        if entry["kind"] not in KINDS:
            raise PlanError(f"{where}: kind must be one of {', '.join(KINDS)}, got {entry['kind']!r:.60}")
        for key in ("row_perm", "col_perm"):
            if not (isinstance(entry[key], list) and all(_is_int(i) for i in entry[key])):
                raise PlanError(f"{where}: {key} must be a list of integers")
        captured = entry.get("captured")
        if captured is not None and not (isinstance(captured, (int, float)) and not isinstance(captured, bool)
                                         and math.isfinite(captured)):
            raise PlanError(f"{where}: captured must be a finite number or null, got {captured!r:.60}")
        mp = cls(name, entry["layer"], entry["kind"], tuple(shape), entry["groups"], entry["row_perm"],
                 entry["col_perm"], captured)
        mp.validate()
        return mp


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

    def by_layer(self) -> dict[int, dict[str, MatrixPlan]]:
        """{layer: {kind: MatrixPlan}}, layers in plan order."""
        out: dict[int, dict[str, MatrixPlan]] = {}
        for mp in self.matrices:
            out.setdefault(mp.layer, {})[mp.kind] = mp
        return out

    def masks(self) -> dict[str, torch.Tensor]:
        return {mp.name: mp.mask() for mp in self.matrices}

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "meta": self.meta,
                "matrices": [asdict(mp) for mp in self.matrices]}

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        if data.get("format_version") != FORMAT_VERSION or isinstance(data.get("format_version"), bool):
            raise PlanError(f"unsupported pgb.json format_version {data.get('format_version')!r:.60} "
                            f"(this version reads {FORMAT_VERSION})")
        meta, entries = data.get("meta", {}), data.get("matrices")
        if not isinstance(meta, dict):
            raise PlanError("pgb.json meta must be an object")
        if not isinstance(entries, list) or not entries:
            raise PlanError("pgb.json is malformed: matrices must be a non-empty list")
        mats = [MatrixPlan.from_json(m, i) for i, m in enumerate(entries)]
        seen = set()
        for mp in mats:
            if mp.name in seen:
                raise PlanError(f"pgb.json names {mp.name} twice")
            seen.add(mp.name)
        return cls(mats, meta)

    def check_matches(self, refs) -> None:
        """Every matrix of the model (MatrixRef-like: name, layer, kind, shape) is planned
        exactly once, with its own layer, kind and shape."""
        mine = {mp.name: mp for mp in self.matrices}
        theirs = {r.name: r for r in refs}
        if set(mine) != set(theirs):
            extra, absent = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
            raise PlanError(f"pgb.json names {len(mine)} matrices that do not match the model's {len(theirs)}"
                            + (f": {extra[0]} is not in the model" if extra else f": {absent[0]} is missing"))
        for r in refs:
            mp = mine[r.name]
            if (mp.layer, mp.kind, tuple(mp.shape)) != (r.layer, r.kind, tuple(r.shape)):
                raise PlanError(f"pgb.json {r.name}: layer {mp.layer}, {mp.kind}, shape {list(mp.shape)} "
                                f"where the model has layer {r.layer}, {r.kind}, shape {list(r.shape)}")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> Plan:
        return cls.from_json(read_object(path, PlanError, "pgb.json"))


def uniform_plan(refs, groups: int, seed: int = 0) -> Plan:
    """The same G for every matrix (MatrixRef-like: name, layer, kind, shape) under random
    permutations: the structure a grouped model's speed depends on, for benchmarks that
    need neither trained weights nor data."""
    gen = torch.Generator().manual_seed(seed)
    return Plan([MatrixPlan(r.name, r.layer, r.kind, r.shape, groups,
                            torch.randperm(r.shape[0], generator=gen).tolist(),
                            torch.randperm(r.shape[1], generator=gen).tolist()) for r in refs],
                {"method": "uniform", "groups": groups, "seed": seed})
