"""Atom features and the Gaussian distance expansion of CGCNN.

(Over 400 lines because the documented definition of the 92 feature columns, block by
block, lives beside the code that encodes them.)

Atom features
-------------
CGCNN (Xie & Grossman, PRL 120, 145301 (2018)) starts every atom from a fixed vector that
one-hot encodes nine element properties.  :meth:`AtomFeatures.default` builds such a
92-long vector for every supported element from pymatgen's element data, with the bins
below.  The original ``atom_init.json`` (same layout, different data source and bins) can be
loaded with :meth:`AtomFeatures.from_json`.

=====  =======================  ====  ====================================================
slice  property                 bins  categories / edges
=====  =======================  ====  ====================================================
0:19   group                    19    slot 0: f-series (pymatgen block ``f``: La–Yb, Ac–No,
                                      which pymatgen files under group 3); slot g: group
                                      g = 1 … 18 (Lu and Lr sit in group 3 with Sc and Y)
19:26  period                   7     period 1 … 7
26:36  electronegativity        10    Pauling χ, equal width over [0.5, 4.0] (0.35 each)
36:46  covalent radius          10    Cordero et al. 2008 (pymatgen ``CovalentRadius``),
                                      equal width over [0.25, 2.75] Å (0.25 Å each)
46:58  valence electrons        12    1 … 12 (rule below)
58:68  first ionisation energy  10    equal width in log10(E / eV) over [0.5, 1.4]
                                      (3.16 – 25.1 eV, 0.09 decades each)
68:78  electron affinity        10    equal width over [-1.0, 4.0] eV (0.5 eV each)
78:82  block                    4     s, p, d, f (pymatgen ``Element.block``, except He,
                                      which pymatgen files under p and we put in s)
82:92  atomic (molar) volume    10    equal width in log10(V / cm³ mol⁻¹) over [0.6, 1.9]
                                      (3.98 – 79.4 cm³/mol, 0.13 decades each)
=====  =======================  ====  ====================================================

Total: 19 + 7 + 10 + 10 + 12 + 10 + 10 + 4 + 10 = 92.  The group property has 19 slots
(18 groups plus the f-series slot), as in the original layout, so that Ce is not encoded
like Y.

Rules:

* Continuous properties: bin ``k`` holds ``edges[k] <= value < edges[k + 1]``; values below
  the first edge go to bin 0, values at or above the last edge go to the last bin.
* Valence electrons: s- and p-block: electrons in the outermost shell (ns + np; He 2, O 6,
  Ga 3); d-block: the group number (Fe 8, Zn 12); f-series: the ns electrons plus the
  (n-1)d electrons of the ground-state configuration (La 3, Ce 3, Eu 2).
* Missing data (pymatgen has no value; e.g. χ of He, Ne, Ar; covalent radius beyond Cm;
  molar volume of At, Fr, Fm–Lr): that property's block is all zeros.
* Supported elements: Z = 1 … 103, i.e. those with at least three of the five measured
  properties (χ, covalent radius, ionisation energy, electron affinity, molar volume).
  Heavier elements raise :class:`UnsupportedElementError`.

Every row of the default table is a deterministic function of the installed pymatgen data;
``AtomFeatures.source`` records the pymatgen version and a hash of the table.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_write_text

__all__ = [
    "AtomFeatures",
    "UnsupportedElementError",
    "FEATURE_BLOCKS",
    "DEFAULT_LENGTH",
    "gaussian_expand",
]

MAX_Z = 118  # rows 0 … MAX_Z of the default table (row 0 unused)
MAX_SUPPORTED_Z = 103


@dataclass(frozen=True)
class FeatureBlock:
    """One one-hot block of the default encoding: its name and slice in the vector."""

    name: str
    start: int
    size: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


_BLOCK_SIZES = (
    ("group", 19),
    ("period", 7),
    ("electronegativity", 10),
    ("covalent_radius", 10),
    ("valence_electrons", 12),
    ("first_ionization_energy", 10),
    ("electron_affinity", 10),
    ("block", 4),
    ("atomic_volume", 10),
)


def _make_blocks() -> dict[str, FeatureBlock]:
    blocks, start = {}, 0
    for name, size in _BLOCK_SIZES:
        blocks[name] = FeatureBlock(name, start, size)
        start += size
    return blocks


FEATURE_BLOCKS: dict[str, FeatureBlock] = _make_blocks()
DEFAULT_LENGTH = sum(size for _, size in _BLOCK_SIZES)  # 92

# Equal-width bin edges of the continuous properties (value transform, lo, hi).
_LOG10 = math.log10
_CONTINUOUS: dict[str, tuple[Callable[[float], float], float, float]] = {
    "electronegativity": (float, 0.5, 4.0),
    "covalent_radius": (float, 0.25, 2.75),
    "first_ionization_energy": (_LOG10, 0.5, 1.4),
    "electron_affinity": (float, -1.0, 4.0),
    "atomic_volume": (_LOG10, 0.6, 1.9),
}
_BLOCK_LETTERS = ("s", "p", "d", "f")
_MEASURED = tuple(_CONTINUOUS)
_MIN_MEASURED = 3


class UnsupportedElementError(CgcnnError, ValueError):
    """An atomic number has no row in an :class:`AtomFeatures` table."""


def _symbol(z: int) -> str | None:
    from pymatgen.core.periodic_table import Element

    try:
        return Element.from_Z(int(z)).symbol
    except (ValueError, KeyError):
        return None


def _element_label(z: int) -> str:
    symbol = _symbol(z)
    return f"{symbol} (Z={z})" if symbol else f"Z={z} (no such element)"


# ---------------------------------------------------------------------------------------
# The default encoding
# ---------------------------------------------------------------------------------------


def bin_index(value: float, lo: float, hi: float, n_bins: int) -> int:
    """Equal-width bin of ``value`` over [lo, hi]; out-of-range values go to the end bins."""
    edges = np.linspace(lo, hi, n_bins + 1)
    return int(np.digitize(value, edges[1:-1]))


def _safe(getter: Callable[[], Any]) -> float | None:
    """Run a pymatgen property getter; None when pymatgen has no (finite) value."""
    try:
        value = getter()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _block_letter(element) -> str:
    return "s" if element.symbol == "He" else element.block


def _valence_electrons(element, block: str) -> int:
    shells = element.full_electronic_structure  # [(n, "s", count), ...]
    n_max = max(n for n, _, _ in shells)
    if block in ("s", "p"):
        return sum(c for n, orb, c in shells if n == n_max and orb in ("s", "p"))
    if block == "d":
        return int(element.group)
    outer_s = sum(c for n, orb, c in shells if n == n_max and orb == "s")
    inner_d = sum(c for n, orb, c in shells if n == n_max - 1 and orb == "d")
    return outer_s + inner_d


def element_properties(z: int) -> dict[str, float | int | str | None]:
    """The nine raw properties encoded by :meth:`AtomFeatures.default` (None = missing)."""
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius
    from pymatgen.core.periodic_table import Element

    element = Element.from_Z(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns when a property is missing
        block = _block_letter(element)
        return {
            "group": 0 if block == "f" else int(element.group),
            "period": int(element.row),
            "electronegativity": _safe(lambda: element.X),
            "covalent_radius": CovalentRadius.radius.get(element.symbol),
            "valence_electrons": _valence_electrons(element, block),
            "first_ionization_energy": _safe(lambda: element.ionization_energies[0]),
            "electron_affinity": _safe(lambda: element.electron_affinity),
            "block": block,
            "atomic_volume": _safe(lambda: element.molar_volume),
        }


def encode_element(props: Mapping[str, Any]) -> np.ndarray:
    """One-hot encode the output of :func:`element_properties` into a 92-long vector."""
    vec = np.zeros(DEFAULT_LENGTH, dtype=np.float32)
    b = FEATURE_BLOCKS
    vec[b["group"].start + props["group"]] = 1.0
    vec[b["period"].start + props["period"] - 1] = 1.0
    n_val = props["valence_electrons"]
    if 1 <= n_val <= b["valence_electrons"].size:
        vec[b["valence_electrons"].start + n_val - 1] = 1.0
    vec[b["block"].start + _BLOCK_LETTERS.index(props["block"])] = 1.0
    for name, (transform, lo, hi) in _CONTINUOUS.items():
        value = props[name]
        if value is None:
            continue
        k = bin_index(transform(value), lo, hi, b[name].size)
        vec[b[name].start + k] = 1.0
    return vec


@functools.lru_cache(maxsize=1)
def _default_table() -> tuple[np.ndarray, np.ndarray]:
    table = np.zeros((MAX_Z + 1, DEFAULT_LENGTH), dtype=np.float32)
    supported = np.zeros(MAX_Z + 1, dtype=bool)
    for z in range(1, MAX_SUPPORTED_Z + 1):
        props = element_properties(z)
        n_measured = sum(props[name] is not None for name in _MEASURED)
        if n_measured >= _MIN_MEASURED:
            table[z] = encode_element(props)
            supported[z] = True
    table.flags.writeable = False
    supported.flags.writeable = False
    return table, supported


# ---------------------------------------------------------------------------------------
# AtomFeatures
# ---------------------------------------------------------------------------------------


class AtomFeatures:
    """Initial atom feature vectors indexed by atomic number.

    Attributes:
        table: float32 [n_rows, L], row ``Z`` is the vector of element ``Z`` (row 0 unused;
            rows of unsupported elements are zero).  Read-only.
        supported: bool [n_rows], True where row ``Z`` holds a vector.  Read-only.
        source: where the table came from (``"cgcnn-da default v1 …"`` or
            ``"atom_init.json sha256:…"``); informational, not part of equality.

    Equality compares the supported elements and their vectors exactly.
    """

    DEFAULT_SOURCE = "cgcnn-da default v1"

    def __init__(self, table: np.ndarray, supported: np.ndarray, source: str = "") -> None:
        table = np.array(table, dtype=np.float32, copy=True)
        supported = np.array(supported, dtype=bool, copy=True)
        if table.ndim != 2 or supported.shape != (table.shape[0],):
            raise ValueError(
                f"table must be [n_rows, L] and supported [n_rows]; got {table.shape} and {supported.shape}"
            )
        if supported[0]:
            raise ValueError("row 0 (Z=0) cannot be a supported element")
        table[~supported] = 0.0
        table.flags.writeable = False
        supported.flags.writeable = False
        self.table = table
        self.supported = supported
        self.source = source

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def default(cls) -> AtomFeatures:
        """The 92-long one-hot encoding described in the module docstring (cached)."""
        from pymatgen.core import __version__ as pmg_version

        table, supported = _default_table()
        obj = cls(table, supported)
        obj.source = f"{cls.DEFAULT_SOURCE} (pymatgen {pmg_version}) sha256:{obj.fingerprint()[:16]}"
        return obj

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]], source: str | None = None) -> AtomFeatures:
        """Build from ``{"Z": [L floats], ...}`` (keys are atomic numbers as strings or ints)."""
        if not data:
            raise ValueError("atom features: empty mapping")
        rows = {}
        for key, vec in data.items():
            try:
                z = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"atom features: key {key!r} is not an atomic number") from None
            if z < 1:
                raise ValueError(f"atom features: atomic number must be >= 1, got {z}")
            rows[z] = np.asarray(vec, dtype=np.float32)
        lengths = {v.shape for v in rows.values()}
        if len(lengths) != 1 or len(next(iter(lengths))) != 1:
            raise ValueError(f"atom features: all vectors must be 1-D of the same length, got shapes {sorted(lengths)}")
        length = next(iter(lengths))[0]
        table = np.zeros((max(rows) + 1, length), dtype=np.float32)
        supported = np.zeros(max(rows) + 1, dtype=bool)
        for z, vec in rows.items():
            table[z] = vec
            supported[z] = True
        obj = cls(table, supported)
        obj.source = source if source is not None else f"dict sha256:{obj.fingerprint()[:16]}"
        return obj

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> AtomFeatures:
        """Read the original CGCNN format ``{"Z": [L floats], ...}`` (e.g. ``atom_init.json``)."""
        path = Path(path)
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        return cls.from_dict(json.loads(raw), source=f"{path.name} sha256:{digest[:16]}")

    # -- serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, list[float]]:
        """``{"Z": [L floats]}`` for the supported elements, ascending Z (JSON-able, exact)."""
        return {str(z): [float(x) for x in self.table[z]] for z in self.atomic_numbers}

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON atomically (temporary file, then ``os.replace``)."""
        path = Path(path)
        text = json.dumps(self.to_dict())
        return atomic_write_text(path, text)

    def fingerprint(self) -> str:
        """sha256 of the supported atomic numbers and their float32 vectors."""
        h = hashlib.sha256()
        h.update(np.int64(self.length).tobytes())
        for z in self.atomic_numbers:
            h.update(np.int64(z).tobytes())
            h.update(np.ascontiguousarray(self.table[z]).tobytes())
        return h.hexdigest()

    # -- queries ------------------------------------------------------------------------

    @property
    def length(self) -> int:
        """L, the length of one feature vector."""
        return int(self.table.shape[1])

    @property
    def n_elements(self) -> int:
        """Number of supported elements."""
        return int(self.supported.sum())

    @property
    def atomic_numbers(self) -> list[int]:
        """Supported atomic numbers, ascending."""
        return [int(z) for z in np.flatnonzero(self.supported)]

    def supports(self, z: int) -> bool:
        """True if element ``z`` has a feature vector."""
        z = int(z)
        return 0 <= z < len(self.supported) and bool(self.supported[z])

    def lookup(self, atomic_numbers: np.ndarray | Sequence[int]) -> np.ndarray:
        """Feature vectors of a list of atoms.

        Shapes:
            atomic_numbers [N] (int) -> float32 [N, L] (a new array).

        Raises:
            UnsupportedElementError: naming the first unsupported element (symbol and Z).
        """
        z = np.asarray(atomic_numbers)
        if z.ndim != 1:
            raise ValueError(f"atomic_numbers must be 1-D, got shape {z.shape}")
        if z.size and not np.issubdtype(z.dtype, np.integer):
            raise TypeError(f"atomic_numbers must be integers, got dtype {z.dtype}")
        z = z.astype(np.int64, copy=False)
        ok = (z >= 0) & (z < len(self.supported))
        ok[ok] = self.supported[z[ok]]
        if not ok.all():
            bad = int(z[~ok][0])
            raise UnsupportedElementError(
                f"element {_element_label(bad)} has no atom features in {self.source or 'this table'}"
            )
        return self.table[z]

    # -- dunder -------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AtomFeatures):
            return NotImplemented
        if self.length != other.length or self.atomic_numbers != other.atomic_numbers:
            return False
        zs = self.atomic_numbers
        return bool(np.array_equal(self.table[zs], other.table[zs]))

    def __repr__(self) -> str:
        return f"AtomFeatures(length={self.length}, n_elements={self.n_elements}, source={self.source!r})"


# ---------------------------------------------------------------------------------------
# Gaussian distance expansion
# ---------------------------------------------------------------------------------------


def gaussian_expand(distances, centers, width: float):
    """Expand distances in Gaussians: ``exp(-(d - mu_k)^2 / width^2)`` (CGCNN Eq. 5 input).

    Works on numpy arrays and torch tensors; the result has the type of ``distances``
    (torch: same device; floating dtype kept, integer input promoted to float32 / float64).

    Values smaller than the dtype's smallest normal number are exactly 0: with the usual
    0.2 Å width most of an edge's distance features would otherwise be subnormal numbers,
    on which CPU arithmetic (this exponential and every product with it) runs several
    times slower.  The change is below 1e-37 per feature.

    Shapes:
        distances [E] (or any [...]), centers [G] -> [E, G] (or [..., G]).
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(distances, torch.Tensor):
        d = distances if distances.is_floating_point() else distances.to(torch.get_default_dtype())
        mu = torch.as_tensor(centers, dtype=d.dtype, device=d.device)
        arg = -((d.unsqueeze(-1) - mu) ** 2) / width**2
        floor = math.log(torch.finfo(d.dtype).tiny) + 1.0  # exp(floor) is safely normal
        return torch.exp(arg.clamp_min(floor)).masked_fill_(arg <= floor, 0.0)
    d = np.asarray(distances)
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float64)
    mu = np.asarray(centers, dtype=d.dtype)
    arg = -((d[..., None] - mu) ** 2) / np.asarray(width, dtype=d.dtype) ** 2
    floor = float(np.log(np.finfo(d.dtype).tiny)) + 1.0
    out = np.exp(np.maximum(arg, floor))
    out[arg <= floor] = 0.0
    return out
