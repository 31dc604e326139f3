"""STAR files: a generic reader/writer and RELION's particles, postprocess and tracks files.

Why not emtable (Scipion's STAR library, v0.0.14), checked on this project's files: it reads one
block at a time by prefix match (asking for ``data_1`` returns ``data_10`` when that comes first)
and cannot list the blocks of a file; it types columns from the first row only (a column "0" then
"0.5" raises ValueError); an empty block swallows the labels of the next one; a loop stops at
its first blank line; its writer prints floats as %0.6f (1.4e-5 becomes 0.000014) and drops the
labels of a table without rows. The small line parser below has none of these problems, and the
tests check that emtable (hence scipion-em-relion) reads what we write.

Labels are stored without the leading underscore (``rlnCoordinateX``), as emtable does. Paths
inside STAR files are project-relative, as RELION writes them (``polishplugin.io.paths``).
"""
import difflib
import logging
import os
import re
import shlex

import numpy as np

from .atomic import atomic_text
from .errors import InputError
from .star_labels import KNOWN_LABELS, label_kind

log = logging.getLogger(__name__)

STAR_VERSION = 30001


class StarTable:
    """One STAR block: ordered columns as numpy arrays (int64, float64 or object arrays of str).

    ``loop`` is False for list-style blocks (``_label value`` pairs, one row) such as
    ``data_general``. ``table[label]`` reads a column, ``table[label] = values`` adds or replaces
    one (a scalar is broadcast), ``len(table)`` is the number of rows.
    """

    def __init__(self, columns=None, loop=True):
        self._cols = {}
        self.loop = loop
        for label, values in (columns or {}).items():
            self[label] = values

    @property
    def labels(self):
        return list(self._cols)

    def __len__(self):
        return len(next(iter(self._cols.values()))) if self._cols else 0

    def __contains__(self, label):
        return _bare(label) in self._cols

    def __getitem__(self, label):
        return self._cols[_bare(label)]

    def __setitem__(self, label, values):
        values = np.asarray(values)
        if values.dtype.kind in "US":
            values = values.astype(object)
        if values.ndim == 0:
            values = np.full(len(self) if self._cols else 1, values.item(),
                             dtype=object if values.dtype == object else values.dtype)
        if values.ndim != 1:
            raise ValueError("column %s must be 1-D, got shape %s" % (label, values.shape))
        label = _bare(label)
        if self._cols and label not in self._cols and len(values) != len(self):
            raise ValueError("column %s has %d values but the table has %d rows"
                             % (label, len(values), len(self)))
        self._cols[label] = values

    def __delitem__(self, label):
        del self._cols[_bare(label)]

    def get(self, label, default=None):
        return self._cols.get(_bare(label), default)

    def row(self, i):
        """Row ``i`` as a dict label -> Python scalar."""
        return {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in self._cols.items()}

    def rows(self):
        """Iterate over the rows as dicts."""
        for i in range(len(self)):
            yield self.row(i)

    def take(self, index):
        """New table with the rows selected by ``index`` (indices or boolean mask)."""
        return StarTable({k: v[index] for k, v in self._cols.items()}, loop=self.loop)

    def copy(self):
        return StarTable({k: v.copy() for k, v in self._cols.items()}, loop=self.loop)

    def require(self, labels, path, block):
        """Raise :class:`InputError` naming the file and block if any of ``labels`` is missing."""
        missing = [lb for lb in labels if lb not in self]
        if missing:
            raise InputError(path, "block data_%s lacks required label(s) %s"
                             % (block, ", ".join("_" + m for m in missing)))

    def __repr__(self):
        return "StarTable(%d rows, labels=%s)" % (len(self), self.labels)


def _bare(label):
    return label[1:] if label.startswith("_") else label


# ----------------------------------------------------------------------------------- labels
_AXIS_TAIL = re.compile(r"[XYZ0-9]$")


def check_label(label, path, strict=True):
    """Reject labels that are not RELION's or look misspelled (InputError names the close match).

    Unknown labels starting with ``rln`` that are not within one or two typos of a known label
    pass (newer RELION versions add labels). Labels that differ from a known one only by a final
    axis letter or digit (``rlnFooX`` vs ``rlnFooY``) also pass. ``strict=False`` turns the
    errors into warnings.
    """
    problem = None
    if label in KNOWN_LABELS:
        return
    if not label.startswith("rln"):
        problem = "unknown label _%s (RELION labels start with _rln)" % label
    else:
        close = difflib.get_close_matches(label, KNOWN_LABELS, n=1, cutoff=0.9)
        if close:
            other = close[0]
            same_stem = (label[:-1] == other[:-1] and _AXIS_TAIL.search(label)
                         and _AXIS_TAIL.search(other))
            if not same_stem:
                problem = "unknown label _%s: did you mean _%s?" % (label, other)
    if problem is None:
        return
    if strict:
        raise InputError(path, problem)
    log.warning("%s: %s", path, problem)


# ----------------------------------------------------------------------------------- reading
def _split(line):
    return shlex.split(line) if ('"' in line or "'" in line) else line.split()


def _parse_blocks(path):
    """(name, loop, labels, rows) per block, in file order; rows are lists of strings."""
    blocks, cur = [], None
    with open(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("data_"):
                cur = [line[5:].strip(), False, [], []]
                blocks.append(cur)
                continue
            if cur is None:
                raise InputError(path, "line %d: content before the first data_ block" % lineno)
            if line.startswith("loop_"):
                if cur[2]:
                    raise InputError(path, "line %d: loop_ after labels in data_%s"
                                     % (lineno, cur[0]))
                cur[1] = True
                continue
            try:
                tokens = _split(line)
            except ValueError as exc:
                raise InputError(path, "line %d: %s" % (lineno, exc)) from exc
            if line.startswith("_"):
                if cur[1] and cur[3]:
                    raise InputError(path, "line %d: label %s after the data rows of data_%s"
                                     % (lineno, tokens[0], cur[0]))
                cur[2].append(tokens[0][1:])
                if not cur[1]:
                    if len(tokens) < 2:
                        raise InputError(path, "line %d: label %s of data_%s has no value"
                                         % (lineno, tokens[0], cur[0]))
                    if not cur[3]:
                        cur[3].append([])
                    cur[3][0].append(tokens[1])
                continue
            if not cur[1]:
                raise InputError(path, "line %d: unexpected values %r in data_%s"
                                 % (lineno, line[:40], cur[0]))
            if len(tokens) != len(cur[2]):
                raise InputError(path, "line %d: %d values for %d labels in data_%s"
                                 % (lineno, len(tokens), len(cur[2]), cur[0]))
            cur[3].append(tokens)
    return blocks


def _column(strings, label, path, block):
    """Convert a column of strings to int64 / float64 / object(str) following the label's type."""
    kind = label_kind(label)
    values = np.array(strings, dtype=object)
    if kind == "str":
        return values
    as_str = np.array(strings, dtype=str)
    try:
        as_float = as_str.astype(np.float64)
    except ValueError:
        if kind is None:
            return values
        bad = next(s for s in strings if not _is_number(s))
        raise InputError(path, "data_%s: label _%s expects numbers, found %r"
                         % (block, label, bad)) from None
    if kind == "float":
        return as_float
    integral = np.all(np.isfinite(as_float)) and np.all(as_float == np.round(as_float))
    if kind == "int":
        if not integral:
            raise InputError(path, "data_%s: label _%s expects integers" % (block, label))
        return as_float.astype(np.int64)
    try:
        return as_str.astype(np.int64)
    except ValueError:
        return as_float


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_star(path, strict=True):
    """Read every block of a STAR file: dict block name -> :class:`StarTable` (file order).

    Raises :class:`InputError` for a missing file, a file without blocks, malformed lines, unknown
    or misspelled labels (see :func:`check_label`) and non-numeric values under numeric labels.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(path, "no such file")
    try:
        blocks = _parse_blocks(path)
    except UnicodeDecodeError as exc:
        raise InputError(path, "not a text STAR file (%s)" % exc) from exc
    if not blocks:
        raise InputError(path, "no data_ blocks (empty STAR file?)")
    out = {}
    for name, loop, labels, rows in blocks:
        if name in out:
            raise InputError(path, "block data_%s appears twice" % name)
        if len(set(labels)) != len(labels):
            dup = next(lb for lb in labels if labels.count(lb) > 1)
            raise InputError(path, "data_%s: label _%s appears twice" % (name, dup))
        for label in labels:
            check_label(label, path, strict)
        table = StarTable(loop=loop)
        columns = list(zip(*rows)) if rows else [()] * len(labels)
        for label, strings in zip(labels, columns):
            table._cols[label] = _column(list(strings), label, path, name)
        out[name] = table
    return out


def read_block(path, name, required=(), strict=True):
    """One block of a STAR file, with its required labels checked and at least one row."""
    blocks = read_star(path, strict)
    if name not in blocks:
        raise InputError(path, "no data_%s block (found: %s)"
                         % (name, ", ".join("data_" + b for b in blocks)))
    table = blocks[name]
    table.require(required, path, name)
    if len(table) == 0:
        raise InputError(path, "block data_%s has no rows" % name)
    return table


# ----------------------------------------------------------------------------------- writing
_NEEDS_QUOTES = re.compile(r"\s|^$|^[_#'\"]|^data_|^loop_")


def _fmt(value):
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    text = str(value)
    if _NEEDS_QUOTES.search(text):
        return "'%s'" % text if '"' in text else '"%s"' % text
    return text


def _block_lines(name, table):
    yield "\n# version %d\n\ndata_%s\n\n" % (STAR_VERSION, name)
    labels = table.labels
    if not table.loop:
        if len(table) != 1:
            raise ValueError("list-style block data_%s must have exactly one row" % name)
        width = max((len(lb) for lb in labels), default=0) + 2
        for label in labels:
            yield "_%s %s\n" % (label.ljust(width), _fmt(table[label][0]))
        yield "\n"
        return
    yield "loop_\n"
    for i, label in enumerate(labels, 1):
        yield "_%s #%d\n" % (label, i)
    cols = [[_fmt(v) for v in table[label]] for label in labels]
    widths = [max((len(s) for s in col), default=0) for col in cols]
    for row in zip(*cols):
        yield " ".join(s.rjust(w) for s, w in zip(row, widths)) + "\n"
    yield "\n"


def write_star(path, blocks):
    """Write ``blocks`` (dict name -> :class:`StarTable`) atomically, RELION 3.1 style."""
    with atomic_text(path) as fh:
        for name, table in blocks.items():
            fh.writelines(_block_lines(name, table))


# ----------------------------------------------------------------------------------- particles
OPTICS_FROM_PARTICLES = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")


def _legacy_optics(path, parts):
    """One optics group per distinct (voltage, Cs, Q0, pixel size) of a pre-3.1 particles table.

    Pixel size: rlnImagePixelSize, else rlnDetectorPixelSize (um) / rlnMagnification * 1e4.
    Origins in pixels (rlnOriginX/Y) become rlnOriginX/YAngst; the moved columns are dropped.
    """
    n = len(parts)
    if "rlnImagePixelSize" in parts:
        pixel = parts["rlnImagePixelSize"].astype(float)
    elif "rlnDetectorPixelSize" in parts and "rlnMagnification" in parts:
        pixel = parts["rlnDetectorPixelSize"] / parts["rlnMagnification"] * 1e4
    else:
        raise InputError(path, "pre-3.1 particles without optics: no pixel size (need "
                         "_rlnImagePixelSize or _rlnDetectorPixelSize and _rlnMagnification)")
    parts.require(OPTICS_FROM_PARTICLES, path, "(particles)")
    keys = np.stack([parts[lb].astype(float) for lb in OPTICS_FROM_PARTICLES] + [pixel], axis=1)
    uniq, group = np.unique(np.round(keys, 6), axis=0, return_inverse=True)
    optics = StarTable({
        "rlnOpticsGroup": np.arange(1, len(uniq) + 1),
        "rlnOpticsGroupName": np.array(["opticsGroup%d" % (i + 1) for i in range(len(uniq))],
                                       dtype=object),
        "rlnVoltage": uniq[:, 0], "rlnSphericalAberration": uniq[:, 1],
        "rlnAmplitudeContrast": uniq[:, 2], "rlnImagePixelSize": uniq[:, 3],
        "rlnImageDimensionality": np.full(len(uniq), 2),
    })
    box = _box_from_stack(path, parts)
    if box:
        optics["rlnImageSize"] = np.full(len(uniq), box)
    parts["rlnOpticsGroup"] = group.reshape(n) + 1
    for axis in "XYZ":
        if "rlnOrigin" + axis in parts:
            parts["rlnOrigin%sAngst" % axis] = parts["rlnOrigin" + axis] * pixel
            del parts["rlnOrigin" + axis]
    for label in OPTICS_FROM_PARTICLES + ("rlnImagePixelSize", "rlnDetectorPixelSize",
                                          "rlnMagnification"):
        if label in parts:
            del parts[label]
    return optics


def _box_from_stack(path, parts):
    """Box size from the header of the first particle's stack, or None if it cannot be read."""
    from .mrc import read_mrc_header
    from .paths import star_path
    stack = str(parts["rlnImageName"][0]).split("@")[-1]
    stack = star_path(stack, path)
    try:
        return read_mrc_header(stack).nx
    except InputError as exc:
        log.warning("%s: box size unknown (%s)", path, exc)
        return None


def read_particles_star(path, strict=True):
    """RELION particles STAR -> (optics, particles) tables.

    RELION >= 3.1 files have data_optics + data_particles; older files (one loop of particles
    with CTF/optics columns per particle) get optics groups built from those columns. Every
    particle's rlnOpticsGroup must exist in the optics table.
    """
    path = os.fspath(path)
    blocks = read_star(path, strict)
    if "particles" in blocks:
        parts = blocks["particles"]
        if "optics" not in blocks:
            raise InputError(path, "has data_particles but no data_optics block")
        optics = blocks["optics"]
        optics.require(("rlnOpticsGroup", "rlnImagePixelSize"), path, "optics")
    else:
        loops = [(n, t) for n, t in blocks.items() if t.loop and "rlnImageName" in t]
        if not loops:
            raise InputError(path, "no particles: neither a data_particles block nor a loop "
                             "with _rlnImageName")
        parts = loops[0][1]
        if len(parts) == 0:
            raise InputError(path, "no particles (the particle loop has no rows)")
        optics = _legacy_optics(path, parts)
    parts.require(("rlnImageName",), path, "particles")
    if len(parts) == 0:
        raise InputError(path, "no particles (data_particles has no rows)")
    if "rlnOpticsGroup" not in parts:
        if len(optics) != 1:
            raise InputError(path, "particles lack _rlnOpticsGroup but there are %d optics groups"
                             % len(optics))
        parts["rlnOpticsGroup"] = np.full(len(parts), optics["rlnOpticsGroup"][0])
    unknown = np.setdiff1d(parts["rlnOpticsGroup"], optics["rlnOpticsGroup"])
    if unknown.size:
        raise InputError(path, "particles refer to optics group(s) %s absent from data_optics"
                         % unknown.tolist())
    return optics, parts


def write_particles_star(path, optics, particles):
    """Write a RELION 3.1+ particles STAR (data_optics then data_particles), atomically."""
    write_star(path, {"optics": optics, "particles": particles})


def optics_of(optics, particles, label):
    """Per-particle value of optics column ``label`` (looked up through rlnOpticsGroup)."""
    lookup = dict(zip(optics["rlnOpticsGroup"].tolist(), optics[label]))
    return np.array([lookup[g] for g in particles["rlnOpticsGroup"].tolist()])


# ----------------------------------------------------------------------------------- postprocess
def read_postprocess(path):
    """relion_postprocess STAR -> dict(half1, half2, mask, pixel_size, final_resolution, bfactor,
    fsc).

    ``fsc`` is the data_fsc table (rlnSpectralIndex, rlnFourierShellCorrelationCorrected, ...).
    ``pixel_size`` comes from data_general's rlnPixelSize if present, else from the FSC table
    (rlnResolution of the last shell = 1 / (2 * pixel) at Nyquist), else None; ``mask`` is None
    when the file names none.
    """
    path = os.fspath(path)
    blocks = read_star(path)
    for name in ("general", "fsc"):
        if name not in blocks:
            raise InputError(path, "no data_%s block: not a relion_postprocess STAR" % name)
    general, fsc = blocks["general"], blocks["fsc"]
    general.require(("rlnUnfilteredMapHalf1", "rlnUnfilteredMapHalf2", "rlnFinalResolution"),
                    path, "general")
    fsc.require(("rlnSpectralIndex", "rlnFourierShellCorrelationCorrected"), path, "fsc")
    if len(fsc) == 0:
        raise InputError(path, "data_fsc has no rows")
    g = general.row(0)
    pixel = g.get("rlnPixelSize")
    if pixel is None and "rlnResolution" in fsc:
        pixel = 1.0 / (2.0 * float(fsc["rlnResolution"][-1]))
    return {"half1": g["rlnUnfilteredMapHalf1"], "half2": g["rlnUnfilteredMapHalf2"],
            "mask": g.get("rlnMaskName"), "pixel_size": pixel,
            "final_resolution": float(g["rlnFinalResolution"]),
            "bfactor": g.get("rlnBfactorUsedForSharpening"), "fsc": fsc}


def write_postprocess(path, half1, half2, final_resolution, fsc, mask=None, bfactor=0.0):
    """Write a postprocess-style STAR (data_general + data_fsc); ``fsc`` is a StarTable or a dict
    of columns with at least rlnSpectralIndex and rlnFourierShellCorrelationCorrected."""
    general = {"rlnFinalResolution": float(final_resolution),
               "rlnBfactorUsedForSharpening": float(bfactor),
               "rlnUnfilteredMapHalf1": half1, "rlnUnfilteredMapHalf2": half2}
    if mask:
        general["rlnMaskName"] = mask
    fsc = fsc if isinstance(fsc, StarTable) else StarTable(fsc)
    write_star(path, {"general": StarTable({k: [v] for k, v in general.items()}, loop=False),
                      "fsc": fsc})


# ----------------------------------------------------------------------------------- tracks
def write_tracks_star(path, tracks_A):
    """Per-particle tracks (P, F, 2) in A, in the layout of RELION's ``_tracks.star``:
    data_general (rlnParticleNumber = P), then data_0 .. data_{P-1}, each a loop of
    rlnOriginXAngst rlnOriginYAngst per frame. Value convention = RELION's (the particle's
    displacement in frame f, in the particles' row order of its micrograph): pinned by
    ``tests/test_relion_polish.py`` (relion_motion_refine's tracks agree with ours and the truth,
    and its --combine_frames on our tracks and bfactors.star gives our shiny particles)."""
    tracks = np.asarray(tracks_A, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape[2] != 2:
        raise ValueError("tracks must have shape (particles, frames, 2), got %s" % (tracks.shape,))
    blocks = {"general": StarTable({"rlnParticleNumber": [tracks.shape[0]]}, loop=False)}
    for p, track in enumerate(tracks):
        blocks[str(p)] = StarTable({"rlnOriginXAngst": track[:, 0],
                                    "rlnOriginYAngst": track[:, 1]})
    write_star(path, blocks)


def read_tracks_star(path):
    """Inverse of :func:`write_tracks_star`: (P, F, 2) float64 array in A."""
    path = os.fspath(path)
    blocks = read_star(path)
    if "general" not in blocks:
        raise InputError(path, "no data_general block: not a tracks STAR")
    blocks["general"].require(("rlnParticleNumber",), path, "general")
    n = int(blocks["general"]["rlnParticleNumber"][0])
    tracks = []
    for p in range(n):
        if str(p) not in blocks:
            raise InputError(path, "rlnParticleNumber is %d but block data_%d is missing" % (n, p))
        table = blocks[str(p)]
        table.require(("rlnOriginXAngst", "rlnOriginYAngst"), path, str(p))
        tracks.append(np.stack([table["rlnOriginXAngst"], table["rlnOriginYAngst"]], axis=1))
    if n and len({len(t) for t in tracks}) != 1:
        raise InputError(path, "particles have different numbers of frames: %s"
                         % sorted({len(t) for t in tracks}))
    return np.array(tracks, dtype=np.float64).reshape(n, len(tracks[0]) if n else 0, 2)
