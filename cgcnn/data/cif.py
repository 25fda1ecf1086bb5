"""CIF files as pymatgen reads them: every block, the parser's warnings kept, files and folders.

A CIF means one thing here: the structures pymatgen's ``CifParser`` builds from it
(``parse_structures(primitive=False)``, what ``Structure.from_file`` does), block by block.
The fast reader of :mod:`cgcnn.data.fast_cif` is used only for the files it can prove it reads
the same way; everything else goes through pymatgen.

* **Blocks** — a file with one structure gives one item, id = the file's id; a file with
  several gives one item per block, id ``<file id>:<block name>``.  Blocks without atom sites
  (a publication block, say) are not structures; a block whose atoms pymatgen cannot read is
  a problem of its own id.
* **Text** — bytes are decoded as pymatgen decodes a file (UTF-8, undecodable bytes replaced,
  so a Latin-1 comment does not stop the file; line ends of any kind read as ``\n``); ``.gz``
  files are decompressed first.
* **Warnings** — what pymatgen says about a file (a declared formula that differs from the
  sites, missing hydrogens, an unknown space-group symbol read as P1, an unknown type symbol,
  …) is returned, one line each, instead of being silenced.  Those that mean "the structure
  may not be what the file says" are :data:`ALTERING` (``strict`` refuses them); the rest are
  notes.  When pymatgen finds no structure, its reason is the problem's reason, not "Invalid
  CIF file with no structures!".
* **Folders** — :func:`cif_items` walks folders recursively (hidden files and folders
  skipped) for ``.cif``, ``.cif.gz`` and ``.mcif`` in any case.  A file's id is its path
  relative to the folder given, without the suffix (``sub/NaCl``); a file given directly is
  its stem.
"""

from __future__ import annotations

import gzip
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cgcnn.data.fast_cif import read_simple_cif
from cgcnn.errors import DatasetError, Problem

CIF_SUFFIXES = (".cif.gz", ".cif", ".mcif")  # longest first: "x.cif.gz" is a .cif.gz
# pymatgen warnings that mean the structure may differ from what the file says
ALTERING = (
    re.compile(r"Incorrect stoichiometry|Missing elements|is not an element symbol"),
    re.compile(r"implicit hydrogens"),
    re.compile(r"Defaulting to P1|parsed as"),
    re.compile(r"Some occupancies .* sum to > 1"),
)
_BENIGN = (re.compile(r"^A 1-line symmetry op P1 CIF is detected!$"), re.compile(r"fractional coordinates rounded"))


@dataclass
class CifReading:
    """What one CIF gave: ``structures`` ((id, Structure) per block), ``problems`` (blocks or
    files refused, with pymatgen's reason) and ``warnings`` (pymatgen's remarks, one line each)."""

    structures: list[tuple[str, object]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def is_cif(path: Path) -> bool:
    """Whether ``path`` is named like a CIF (``.cif``, ``.cif.gz``, ``.mcif``, any case)."""
    name = path.name.lower()
    return any(name.endswith(s) for s in CIF_SUFFIXES) and not path.name.startswith(".")


def cif_id(path: Path) -> str:
    """The file's name without its CIF suffix (``NaCl.cif.gz`` -> ``NaCl``)."""
    name = path.name
    for suffix in CIF_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def cif_items(paths) -> list[tuple[str, Path]]:
    """``(id, path)`` of CIF files given directly and of every CIF below given folders
    (recursively; hidden files and folders skipped; sorted by path).  Ids: see the module
    docstring.  Repeated ids are kept here and reported by the builder with both paths."""
    out: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file() and is_cif(f) and not _hidden(f.relative_to(p))]
            for f in sorted(found):
                rel = f.relative_to(p)
                out.append(((rel.parent / cif_id(f)).as_posix(), f))
        elif p.is_file():
            out.append((cif_id(p), p))
        else:
            raise DatasetError(f"{p}: no such file or folder; check the path")
    return out


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def cif_text(path: Path) -> str:
    """A CIF file's text as pymatgen reads it (``Structure.from_file`` opens it in text mode):
    UTF-8 with undecodable bytes replaced, after decompressing a ``.gz`` file, and every line
    end (``\r\n`` or a lone ``\r``, as old Mac editors write) read as ``\n``."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path}: not a readable gzip file ({exc}); check the file") from None
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_altering(message: str) -> bool:
    """Whether a pymatgen warning means the structure may not be what the file says."""
    return any(rx.search(message) for rx in ALTERING)


def read_cif(source: str | Path, item_id: str, *, where: str | None = None) -> CifReading:
    """Every structure of a CIF (a path or CIF text) as pymatgen reads it, with its warnings.

    ``where`` names the file at the start of messages (default: the path; nothing for text,
    whose messages are under ``item_id`` anyway).
    """
    where = where or (str(source) if isinstance(source, Path) else "")
    text = cif_text(source) if isinstance(source, Path) else str(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fast reader's numpy and pymatgen calls: nothing may leak
        fast = read_simple_cif(text)
    if fast is not None:
        return CifReading([(item_id, fast)])
    return _read_with_pymatgen(text, item_id, where)


def _read_with_pymatgen(text: str, item_id: str, where: str) -> CifReading:
    from pymatgen.io.cif import CifParser

    where = f"{where}: " if where else ""
    out = CifReading()
    said: list[str] = []
    said_here: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text)
        except Exception as exc:  # the tokeniser raises many types for a broken file
            out.problems.append(
                Problem(item_id, f"{where}cannot parse the file as a CIF ({_one_line(exc) or type(exc).__name__})")
            )
            return out
        blocks = [(name, block) for name, block in parser._cif.data.items() if _has_sites(block)]
        multi = len(blocks) > 1
        for name, block in blocks:
            block_id = f"{item_id}:{name}" if multi else item_id
            before = len(parser.warnings)
            bad_cell = _bad_cell(block)
            if bad_cell:
                out.problems.append(Problem(block_id, f"{where}cannot parse the structure: {bad_cell}"))
                continue
            # pymatgen checks every block's composition against the file's first block (CifParser.check
            # reads the head of as_dict()); with this block first it is checked against its own formula
            everything = parser._cif.data
            parser._cif.data = {name: block, **{k: v for k, v in everything.items() if k != name}}
            try:
                # what parse_structures(primitive=False) does for each block
                structure = parser._get_structure(block, primitive=False, symmetrized=False, check_occu=True)
            except Exception as exc:  # pymatgen raises many types for a broken block (KeyError, OverflowError, ...)
                reasons = _remarks([_one_line(w) for w in parser.warnings[before:]] + [_failure(block, exc)])
                out.problems.append(
                    Problem(block_id, f"{where}cannot parse the structure (pymatgen: {'; '.join(reasons)})")
                )
                continue
            finally:
                parser._cif.data = everything
            if structure is None:
                reasons = _remarks([_one_line(w) for w in parser.warnings[before:]])
                why = "; ".join(reasons) or "no atom sites"
                out.problems.append(Problem(block_id, f"{where}cannot parse a structure (pymatgen builds none: {why})"))
                continue
            out.structures.append((block_id, structure))
            said_here.extend(_guessed_symbols(block, structure))
        said = said_here + [_one_line(w) for w in parser.warnings] + [_one_line(w.message) for w in caught]
    remarks = _remarks(said)
    if not blocks:
        names = ", ".join(parser._cif.data) or "none"
        why = f"; pymatgen: {'; '.join(remarks[:3])}" if remarks else ""
        out.problems.append(
            Problem(item_id, f"{where}cannot parse a structure: no block with atom sites (blocks: {names}){why}")
        )
    if not out.structures:  # the file is refused: what pymatgen said is in the reason, not a warning
        return out
    out.warnings = [Problem(item_id, f"{where}pymatgen: {m}") for m in remarks]
    return out


def _remarks(said: list[str]) -> list[str]:
    """pymatgen's messages, once each, benign ones left out, its one-token "possible issue at
    line" messages joined into one."""
    out: list[str] = []
    issue: list[str] = []
    for message in said:
        if message.startswith("Possible issue in CIF file at line: "):
            issue.append(message.removeprefix("Possible issue in CIF file at line: "))
            continue
        if message and message not in out and not any(rx.search(message) for rx in _BENIGN):
            out.append(message)
    if issue:
        out.insert(0, "unreadable text in the file: " + " ".join(dict.fromkeys(issue)))
    return out


def _failure(block, exc: Exception) -> str:
    """pymatgen's failure on a block in words: a missing tag is named as missing (and a
    missing cell parameter or fractional coordinates said as such)."""
    if isinstance(exc, KeyError) and exc.args:
        tag = str(exc.args[0])
        if tag.startswith("_atom_site_fract") and any(k.lower().startswith("_atom_site_cartn") for k in block.data):
            return f"no {tag}: pymatgen reads fractional coordinates only; convert the Cartesian ones"
        return f"the block has no {tag}"
    cell = [f"_cell_length_{x}" for x in "abc"] + [f"_cell_angle_{x}" for x in ("alpha", "beta", "gamma")]
    missing = [k for k in cell if k not in block.data]
    text = _one_line(exc) or type(exc).__name__
    return f"{text}; the cell lacks {', '.join(missing)}" if missing else text


def _bad_cell(block) -> str | None:
    """What is wrong with the cell parameters of a block (a length not above 0, an angle not
    between 0 and 180 degrees, angles that close no cell), or None; pymatgen would only say
    "Singular matrix"."""
    from pymatgen.io.cif import str2float

    angles = {}
    for axis in ("a", "b", "c", "alpha", "beta", "gamma"):
        key = f"_cell_length_{axis}" if len(axis) == 1 else f"_cell_angle_{axis}"
        if key not in block.data:
            continue
        try:
            value = str2float(block.data[key])
        except (ValueError, TypeError):
            return f"{key} is {block.data[key]!r}, not a number"
        if len(axis) == 1 and not value > 0:
            return f"cell length {axis} is {value:g} Å; a cell length must be positive"
        if len(axis) > 1 and not 0 < value < 180:
            return f"cell angle {axis} is {value:g}°; an angle must lie between 0 and 180"
        if len(axis) > 1:
            angles[axis] = value
    if len(angles) == 3:
        c = [math.cos(math.radians(v)) for v in angles.values()]
        if 1 - sum(x * x for x in c) + 2 * c[0] * c[1] * c[2] < 1e-6:  # (volume / abc)², >= 0 for a real cell
            return (
                "cell angles alpha {alpha:g}°, beta {beta:g}°, gamma {gamma:g}° close no cell (each must be less "
                "than the sum of the other two, and the three less than 360°)".format(**angles)
            )
    return None


def _guessed_symbols(block, structure) -> list[str]:
    """A remark for each type symbol that is not an element, which pymatgen turned into one
    by guessing (``Du`` -> H): the structure is then not what the file says."""
    from pymatgen.core import Element

    symbols = block.data.get("_atom_site_type_symbol") or []
    elements = {str(e) for e in structure.composition.elements}
    out = []
    for sym in dict.fromkeys(symbols):
        bare = re.sub(r"[\d.+-]+$", "", str(sym))
        if bare and not Element.is_valid_symbol(bare) and bare not in elements:
            out.append(
                f"type symbol {sym!r} is not an element symbol: the structure holds {', '.join(sorted(elements))}"
            )
    return out


def _has_sites(block) -> bool:
    keys = block.data
    return any(k in keys for k in ("_atom_site_fract_x", "_atom_site_Cartn_x", "_atom_site_cartn_x"))
