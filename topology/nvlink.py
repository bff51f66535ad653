"""The intra-host GPU interconnect annotation published by the node agent. Pure.

`clique.dev/nvlink-matrix` holds one row per GPU, rows separated by ';', one character per GPU pair:
    X  the GPU itself        N  NVLink peer-to-peer     P  peer-to-peer over PCIe     -  no peer-to-peer
An 8-GPU NVSwitch host is "XNNNNNNN;NXNNNNNN;...", a PCIe-only 4-GPU host "XPPP;PXPP;PPXP;PPPX".
"""

from __future__ import annotations

from dataclasses import dataclass

NVLINK_MATRIX_ANNOTATION = "clique.dev/nvlink-matrix"
_VALID = set("XNP-")


class MatrixError(ValueError):
    """The annotation is malformed; the message says where."""


@dataclass(frozen=True)
class LinkMatrix:
    rows: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.rows)

    def nvlinked(self, a: int, b: int) -> bool:
        return self.rows[a][b] == "N"

    def pairs(self) -> list[tuple[int, int, int]]:
        """NVLink-connected pairs (a < b) as (a, b, 1)."""
        return [(a, b, 1) for a in range(self.size) for b in range(a + 1, self.size) if self.nvlinked(a, b)]

    def islands(self) -> list[list[int]]:
        """GPU groups connected by NVLink (connected components), each sorted, in order of their first GPU."""
        seen: set[int] = set()
        out: list[list[int]] = []
        for start in range(self.size):
            if start in seen:
                continue
            group, stack = [], [start]
            seen.add(start)
            while stack:
                g = stack.pop()
                group.append(g)
                for h in range(self.size):
                    if h not in seen and self.nvlinked(g, h):
                        seen.add(h)
                        stack.append(h)
            out.append(sorted(group))
        return out

    def encode(self) -> str:
        return ";".join(self.rows)


def parse_nvlink_matrix(text: str) -> LinkMatrix:
    rows = tuple(r.strip() for r in text.strip().split(";") if r.strip())
    n = len(rows)
    for i, row in enumerate(rows):
        if len(row) != n:
            raise MatrixError(f"{NVLINK_MATRIX_ANNOTATION}: row {i} has {len(row)} entries, expected {n} (square matrix)")
        bad = set(row) - _VALID
        if bad:
            raise MatrixError(f"{NVLINK_MATRIX_ANNOTATION}: row {i} has {sorted(bad)}; use X, N, P or -")
        if row[i] != "X":
            raise MatrixError(f"{NVLINK_MATRIX_ANNOTATION}: row {i} must have X on the diagonal")
    for a in range(n):
        for b in range(n):
            if rows[a][b] != rows[b][a]:
                raise MatrixError(f"{NVLINK_MATRIX_ANNOTATION}: entries ({a},{b}) and ({b},{a}) differ; the matrix must be symmetric")
    return LinkMatrix(rows)


def encode_links(size: int, nvlink_pairs: set[tuple[int, int]], pcie_p2p_pairs: set[tuple[int, int]] = frozenset()) -> str:
    """Build the annotation value from pair sets (pairs in any order)."""
    def kind(a: int, b: int) -> str:
        if a == b:
            return "X"
        if (a, b) in nvlink_pairs or (b, a) in nvlink_pairs:
            return "N"
        if (a, b) in pcie_p2p_pairs or (b, a) in pcie_p2p_pairs:
            return "P"
        return "-"
    return ";".join("".join(kind(a, b) for b in range(size)) for a in range(size))
