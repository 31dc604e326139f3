"""Scipion (pwem) sets <-> RELION STAR files. pwem is imported inside the functions only.

Alignment convention reproduced from scipion-em-relion (relion/convert/convert31.py,
``Writer._alignProjToRow``, and relion/convert/convert_utils.py / convert_base.py,
``matrixFromGeometry(shifts, angles, inverseTransform=True)``), with pwem.convert.transformations:

* set -> STAR: ``M = inv(T)``; origin (px) = ``-translation_from_matrix(M)``, times the pixel size
  for rlnOriginX/YAngst; (rot, tilt, psi) = ``-degrees(euler_from_matrix(M, 'szyz'))``;
* STAR -> set: ``M = euler_matrix(-rot, -tilt, -psi, 'szyz')``, ``M[:3, 3] = -origin_px``,
  ``T = inv(M)``.

Movie global shifts: pwem's MovieAlignment x/y shifts hold RELION's rlnMicrographShiftX/Y as they
are (pixels, same sign), as scipion-em-relion's ProtRelionMotioncor ``_getMovieShifts`` stores
them (pixels of the raw frames, whatever the binning of the corrected micrographs); a
MovieAlignment of a frame range (first > 1) holds one shift per frame of that range.

Particles are matched to movies (:func:`match_particles_to_movies`) by micrograph name without
folders and extensions, then by micrograph id, then by the name of the particle's stack, so that
names written by different plugins (``sim_0000.tiff`` for the movie, ``sim_0000.mrc`` or
``MotionCorr/job002/Movies/sim_0000.mrc`` for the particles) meet.
"""
import os

import numpy as np

from .errors import InputError
from .motioncorr import (read_corrected_micrographs, read_micrograph_metadata,
                         write_corrected_micrographs, write_micrograph_metadata)
from .star import StarTable, optics_of, read_particles_star, write_particles_star


# ----------------------------------------------------------------------------------- alignment
def matrix_to_relion(matrix, pixel_size):
    """pwem 4x4 projection Transform matrix -> (rot, tilt, psi) in degrees, (x, y) origin in A."""
    import pwem.convert.transformations as tfs
    m = np.linalg.inv(np.asarray(matrix, dtype=np.float64))
    shifts = -tfs.translation_from_matrix(m) * pixel_size
    angles = -np.rad2deg(tfs.euler_from_matrix(m, axes="szyz"))
    return angles, shifts[:2]


def relion_to_matrix(angles_deg, origin_A, pixel_size):
    """(rot, tilt, psi) degrees and (x, y) origin in A -> pwem 4x4 projection Transform matrix."""
    import pwem.convert.transformations as tfs
    rot, tilt, psi = -np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    m = tfs.euler_matrix(rot, tilt, psi, "szyz")
    m[:2, 3] = -np.asarray(origin_A, dtype=np.float64) / pixel_size
    m[2, 3] = 0.0
    return np.linalg.inv(m)


def location_to_relion(index, filename):
    """pwem (index, file) -> RELION 'index@file' (plain file name when index is NO_INDEX = 0)."""
    return "%06d@%s" % (index, filename) if index else filename


def relion_to_location(name):
    """RELION 'index@file' -> (index, file); (0, file) without index."""
    if "@" in name:
        index, filename = name.split("@", 1)
        return int(index), filename
    return 0, name


# ----------------------------------------------------------------------------------- particles
def particles_to_tables(part_set, mic_names=None):
    """SetOfParticles -> (optics, particles) StarTables in RELION 3.1 layout.

    One optics group per distinct (voltage, Cs, Q0, pixel size). Writes alignment when the set
    has projection alignment, CTF when it has CTF, coordinates and micrograph names when the
    particles have coordinates, rlnRandomSubset when they carry ``_rlnRandomSubset``.
    ``mic_names`` ({particle id: movie's micrograph name}, from
    :func:`match_particles_to_movies`): the rlnMicrographName written; particles it lacks are
    left out (and not read: the others are fetched by id).
    """
    import pwem
    box = part_set.getXDim() or _box_of(part_set.getFirstItem())
    with_align = part_set.getAlignment() == pwem.ALIGN_PROJ
    with_ctf = part_set.hasCTF()
    cols, groups = {}, {}

    def put(label, value):
        cols.setdefault(label, []).append(value)

    items = part_set.iterItems(orderBy="id") if mic_names is None else \
        iter_by_ids(part_set, mic_names)
    for part in items:
        acq = part.getAcquisition()
        pixel = part.getSamplingRate()
        key = (acq.getVoltage(), acq.getSphericalAberration(), acq.getAmplitudeContrast(), pixel)
        group = groups.setdefault(key, len(groups) + 1)
        put("rlnImageName", location_to_relion(*part.getLocation()))
        coord = part.getCoordinate()
        if coord is not None and coord.getX() is not None:
            put("rlnCoordinateX", float(coord.getX()))
            put("rlnCoordinateY", float(coord.getY()))
            put("rlnMicrographName", str(mic_names[part.getObjId()]) if mic_names is not None
                else str(coord.getMicName() or coord.getMicId()))
        if with_ctf:
            ctf = part.getCTF()
            put("rlnDefocusU", ctf.getDefocusU())
            put("rlnDefocusV", ctf.getDefocusV())
            put("rlnDefocusAngle", ctf.getDefocusAngle())
            put("rlnPhaseShift", ctf.getPhaseShift() or 0.0)
        if with_align:
            angles, origin = matrix_to_relion(part.getTransform().getMatrix(), pixel)
            for label, value in zip(("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"), angles):
                put(label, value)
            put("rlnOriginXAngst", origin[0])
            put("rlnOriginYAngst", origin[1])
        if part.hasAttribute("_rlnRandomSubset"):
            put("rlnRandomSubset", int(part._rlnRandomSubset.get()))
        put("rlnOpticsGroup", group)
    n = len(cols["rlnImageName"])
    ragged = [label for label, values in cols.items() if len(values) != n]
    if ragged:
        raise ValueError("particles differ in which attributes they have: %s" % ragged)
    keys = sorted(groups, key=groups.get)
    optics = StarTable({
        "rlnOpticsGroup": [groups[k] for k in keys],
        "rlnOpticsGroupName": ["opticsGroup%d" % groups[k] for k in keys],
        "rlnVoltage": [k[0] for k in keys], "rlnSphericalAberration": [k[1] for k in keys],
        "rlnAmplitudeContrast": [k[2] for k in keys], "rlnImagePixelSize": [k[3] for k in keys],
        "rlnMicrographOriginalPixelSize": [k[3] for k in keys],
        "rlnImageSize": [box] * len(keys), "rlnImageDimensionality": [2] * len(keys)})
    return optics, StarTable(cols)


def _box_of(part):
    """Box size from the header of a particle's stack (when the set does not know it)."""
    from .mrc import read_mrc_header
    return read_mrc_header(part.getFileName()).nx


def write_set_of_particles(part_set, path, mic_names=None):
    """SetOfParticles -> RELION 3.1 particles STAR (atomic); returns (optics, particles).
    ``mic_names``: see :func:`particles_to_tables`."""
    optics, particles = particles_to_tables(part_set, mic_names)
    write_particles_star(path, optics, particles)
    return optics, particles


def tables_to_particles(optics, particles, part_set, root=None):
    """Fill ``part_set`` (an empty SetOfParticles) from RELION tables.

    Image paths are joined to ``root`` when given and relative. pwem Coordinates hold integers:
    fractional rlnCoordinateX/Y are rounded (the sub-pixel part belongs in the origins).
    Every particle gets the same attributes (pwem fixes the sqlite columns at the first item):
    CTF, alignment, coordinate and ``_rlnRandomSubset`` are set for all particles or for none,
    following the columns present.
    """
    import pwem
    from pwem.objects import Acquisition, Coordinate, CTFModel, Particle, Transform
    from pyworkflow.object import Integer
    pixel = optics_of(optics, particles, "rlnImagePixelSize").astype(float)
    volt = optics_of(optics, particles, "rlnVoltage").astype(float)
    cs = optics_of(optics, particles, "rlnSphericalAberration").astype(float)
    q0 = optics_of(optics, particles, "rlnAmplitudeContrast").astype(float)
    has = particles.__contains__
    with_ctf = has("rlnDefocusU") and has("rlnDefocusV")
    with_align = all(has(lb) for lb in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"))
    with_coord = has("rlnCoordinateX") and has("rlnCoordinateY")
    zeros = np.zeros(len(particles))

    def col(label):
        return particles[label] if has(label) else zeros

    acq0 = Acquisition(voltage=volt[0], sphericalAberration=cs[0], amplitudeContrast=q0[0],
                       magnification=10000)
    part_set.setSamplingRate(float(pixel[0]))
    part_set.setAcquisition(acq0)
    part_set.setHasCTF(with_ctf)
    if "rlnImageSize" in optics:
        box = int(optics["rlnImageSize"][0])
        part_set.setDim((box, box, 1))
    if with_align:
        part_set.setAlignmentProj()
    for i in range(len(particles)):
        index, filename = relion_to_location(str(particles["rlnImageName"][i]))
        if root and not os.path.isabs(filename):
            filename = os.path.join(root, filename)
        part = Particle(location=(index, filename))
        part.setObjId(i + 1)
        part.setSamplingRate(float(pixel[i]))
        part.setAcquisition(Acquisition(voltage=volt[i], sphericalAberration=cs[i],
                                        amplitudeContrast=q0[i], magnification=10000))
        if with_ctf:
            ctf = CTFModel(defocusU=float(particles["rlnDefocusU"][i]),
                           defocusV=float(particles["rlnDefocusV"][i]),
                           defocusAngle=float(col("rlnDefocusAngle")[i]))
            ctf.setPhaseShift(float(col("rlnPhaseShift")[i]))
            part.setCTF(ctf)
        if with_align:
            angles = [particles[lb][i] for lb in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")]
            origin = (col("rlnOriginXAngst")[i], col("rlnOriginYAngst")[i])
            part.setTransform(Transform(relion_to_matrix(angles, origin, pixel[i])))
        if with_coord:
            coord = Coordinate()
            coord.setPosition(int(round(float(particles["rlnCoordinateX"][i]))),
                              int(round(float(particles["rlnCoordinateY"][i]))))
            if has("rlnMicrographName"):
                coord.setMicName(str(particles["rlnMicrographName"][i]))
            part.setCoordinate(coord)
        if has("rlnRandomSubset"):
            part._rlnRandomSubset = Integer(int(particles["rlnRandomSubset"][i]))
        part_set.append(part)
    if with_align:
        part_set.setAlignment(pwem.ALIGN_PROJ)
    return part_set


def read_set_of_particles(path, part_set, root=None):
    """RELION particles STAR (3.1+ or older) -> ``part_set`` (see :func:`tables_to_particles`)."""
    optics, particles = read_particles_star(path)
    return tables_to_particles(optics, particles, part_set, root)


# ----------------------------------------------------------------------------------- movies
def mic_key(name):
    """Micrograph name without folders and extensions: ``sim_0000`` for ``sim_0000.tiff``,
    ``MotionCorr/job002/Movies/sim_0000.mrc`` or ``sim_0000.mrc.bz2``."""
    base = os.path.basename(str(name).strip())
    stem, ext = os.path.splitext(base)
    while ext and stem and len(ext) <= 5 and not ext[1:].isdigit():
        base = stem
        stem, ext = os.path.splitext(base)
    return base


def movie_mic_name(movie):
    """The name a movie is known by in corrected_micrographs.star (its micName, else its file)."""
    return movie.getMicName() or os.path.basename(movie.getFileName())


class MovieMatcher:
    """Pairs particles with movies, fed incrementally (a stream adds movies and particles as they
    arrive: each is looked at once, never the whole sets again).

    The coordinate's micName without folders and extensions (:func:`mic_key`) decides when there
    is one (a name that meets no movie leaves the particle unmatched); without a micName, its
    micId (the particle's when the coordinate has none) as a movie id, then the particle's stack
    file name (RELION's and Scipion's extraction name stacks after their micrograph).
    """

    def __init__(self):
        self.by_key, self.by_id, self.movie_ids = {}, {}, {}

    def add_movies(self, movies):
        """Index movies (pwem Movie objects); returns the micrograph names added."""
        added = []
        for movie in movies:
            name = movie_mic_name(movie)
            if self.by_key.setdefault(mic_key(name), name) == name:
                self.movie_ids.setdefault(name, movie.getObjId())
            self.by_id[movie.getObjId()] = name
            added.append(name)
        return added

    def match(self, particles):
        """``(names, unmatched)`` of ``particles`` against the movies added so far: ``names``
        {particle id: the movie's :func:`movie_mic_name`}, ``unmatched`` [(particle id, what it
        had)] for particles no movie claims."""
        names, unmatched = {}, []
        for part in particles:
            coord = part.getCoordinate()
            mic_name = coord.getMicName() if coord is not None else None
            mic_id = (coord.getMicId() if coord is not None else None) or part.getMicId()
            stack = mic_key(part.getFileName() or "")
            if mic_name:
                name = self.by_key.get(mic_key(mic_name))
            else:
                name = self.by_id.get(int(mic_id)) if mic_id is not None else None
                if name is None:
                    name = self.by_key.get(stack) or next(
                        (v for k, v in self.by_key.items() if stack.startswith(k + "_")), None)
            if name is None:
                unmatched.append((part.getObjId(), "micName %s, micId %s, stack %s"
                                  % (mic_name, mic_id, part.getFileName())))
            else:
                names[part.getObjId()] = name
        return names, unmatched


def match_particles_to_movies(part_set, movie_set):
    """Pair each particle of ``part_set`` with its movie in ``movie_set`` (see
    :class:`MovieMatcher`); returns ``(names, unmatched)``."""
    matcher = MovieMatcher()
    matcher.add_movies(movie_set.iterItems(orderBy="id"))
    return matcher.match(part_set.iterItems(orderBy="id"))


def iter_by_ids(item_set, ids, chunk=500):
    """Items of ``item_set`` with the given object ids, in id order, fetched by id (chunks of
    ``chunk``) rather than by scanning the whole set."""
    ids = sorted(int(i) for i in ids)
    for start in range(0, len(ids), chunk):
        where = "id IN (%s)" % ",".join(str(i) for i in ids[start:start + chunk])
        yield from item_set.iterItems(orderBy="id", where=where)


def aligned_movie_reason(movie):
    """Why ``movie`` is an already motion-corrected (aligned) movie, or None: such movies hold
    interpolated, gain-corrected frames and all-zero shifts, so polishing would apply the gain a
    second time and start from no motion."""
    align = movie.getAlignment()
    name = os.path.basename(movie.getFileName() or "")
    if "_aligned_mic" in name or "_aligned_movie" in name:
        return "%s is an aligned movie written by a motion correction" % name
    if align is not None:
        xs, ys = align.getShifts()
        if len(xs) > 1 and not any(xs) and not any(ys):
            return "%s has all-zero global shifts (an aligned movie)" % name
    return None


def movie_pixel_size(movie_set):
    """Pixel size (A) of the movies' frames (see :func:`movie_pixel_source`)."""
    return movie_pixel_source(movie_set)[0]


def movie_pixel_source(movie_set):
    """(pixel size (A) of the movies' frames, where it came from). The set's sampling rate,
    unless it is an integer multiple (2x, 3x, ...) of the pixel size in the first movie's header
    (MRC): a motion correction that bins its micrographs may label its output movies with the
    binned size although their frames are the raw ones. A header that disagrees otherwise
    (often 1.0 or 0 when unset) is not trusted; TIFF files carry no pixel size, so for them the
    set's sampling is all there is."""
    from .movies import Movie
    sampling = float(movie_set.getSamplingRate())
    first = movie_set.getFirstItem()
    if first is not None and os.path.exists(first.getFileName()):
        with Movie(first.getFileName()) as mov:
            header = float(mov.pixel_size)
        factor = sampling / header if header > 0 else 0.0
        if round(factor) >= 2 and abs(factor - round(factor)) < 0.01 * factor:
            return header, "the movie header (the set is labelled %dx it)" % round(factor)
        if os.path.splitext(first.getFileName())[1].lower() in (".tif", ".tiff"):
            return sampling, "the movie set's sampling: TIFF movies carry no pixel size"
    return sampling, "the movie set's sampling"


def _movie_dims(path):
    from .movies import Movie
    with Movie(path) as mov:
        return mov.shape[1], mov.shape[0], mov.nframes


def movie_shifts(movie, nframes):
    """(nframes, 2) global shifts of a movie's MovieAlignment, one row per frame (frame f at row
    f - 1), NaN for frames outside its aligned range; raises InputError when the alignment's
    length fits neither the movie nor its range."""
    align = movie.getAlignment()
    if align is None:
        raise InputError(movie.getFileName(), "movie has no alignment (global shifts): import it "
                         "with its motion correction or estimate the initial track from the data")
    xs, ys = align.getShifts()
    first = max(int(align.getRange()[0] or 1), 1)
    shifts = np.full((nframes, 2), np.nan)
    if len(xs) == nframes:
        first = 1
    elif first - 1 + len(xs) > nframes:
        raise InputError(movie.getFileName(), "%d global shifts from frame %d on for a movie of "
                         "%d frames" % (len(xs), first, nframes))
    shifts[first - 1:first - 1 + len(xs)] = np.stack([list(xs), list(ys)], axis=1)
    return shifts


def relion_local_motion(movie):
    """(motion model (idx, coeffs) or None, hot pixels (N, 2) or None) that scipion-em-relion's
    motion correction attaches to a movie (``_rlnMotionModelCoeff``, ``_rlnHotPixels``: JSON
    lists, read the same way by its Bayesian polishing)."""
    import json
    coeffs = json.loads(movie.getAttributeValue("_rlnMotionModelCoeff", "[]") or "[]")
    hot = json.loads(movie.getAttributeValue("_rlnHotPixels", "[]") or "[]")
    model = (np.arange(len(coeffs)), np.asarray(coeffs, dtype=np.float64)) if coeffs else None
    return model, (np.asarray(hot, dtype=np.float64).reshape(-1, 2) if hot else None)


def write_set_of_movies(movie_set, path, metadata_dir, pixel_size=None, no_alignment=False,
                        only=None):
    """SetOfMovies with MovieAlignment -> corrected_micrographs.star + one metadata STAR per movie
    (written in ``metadata_dir``); returns the micrographs table.

    ``pixel_size``: the frames' pixel size (default :func:`movie_pixel_size`); shifts cover all
    frames (-9999 outside the aligned range, see :func:`movie_shifts`); ``no_alignment``: zero
    shifts for movies without alignment (when the initial track comes from the data); ``only``:
    the ids of the movies to write (fetched by id; default all)."""
    acq = movie_set.getAcquisition()
    pixel = pixel_size or movie_pixel_size(movie_set)
    gain = movie_set.getGain()
    nx, ny, nframes = movie_set.getDim() or _movie_dims(movie_set.getFirstItem().getFileName())
    os.makedirs(metadata_dir, exist_ok=True)
    names, metas = [], []
    movies = movie_set.iterItems(orderBy="id") if only is None else iter_by_ids(movie_set, only)
    for movie in movies:
        if no_alignment and movie.getAlignment() is None:
            shifts = np.zeros((nframes, 2))
        else:
            shifts = movie_shifts(movie, nframes)
        model, hot = relion_local_motion(movie)
        align = movie.getAlignment()
        start = max(int(align.getRange()[0] or 1), 1) if align is not None else 1
        mic = movie_mic_name(movie)
        meta = os.path.join(metadata_dir, mic_key(mic) + ".star")
        general = {"rlnImageSizeX": nx, "rlnImageSizeY": ny, "rlnImageSizeZ": nframes,
                   "rlnMicrographMovieName": movie.getFileName()}
        if gain:
            general["rlnMicrographGainName"] = gain
        general.update({"rlnMicrographBinning": 1.0, "rlnMicrographOriginalPixelSize": pixel,
                        "rlnMicrographDoseRate": acq.getDosePerFrame() or 0.0,
                        "rlnMicrographPreExposure": acq.getDoseInitial() or 0.0,
                        "rlnVoltage": acq.getVoltage(), "rlnMicrographStartFrame": start})
        write_micrograph_metadata(meta, general, shifts, model, hot)
        names.append(mic)
        metas.append(meta)
    optics = StarTable({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnMicrographOriginalPixelSize": [pixel], "rlnVoltage": [acq.getVoltage()],
        "rlnSphericalAberration": [acq.getSphericalAberration()],
        "rlnAmplitudeContrast": [acq.getAmplitudeContrast()], "rlnMicrographPixelSize": [pixel]})
    mics = StarTable({"rlnMicrographName": names, "rlnMicrographMetadata": metas,
                      "rlnOpticsGroup": [1] * len(names)})
    write_corrected_micrographs(path, optics, mics)
    return mics


def read_set_of_movies(path, movie_set, root=None):
    """corrected_micrographs.star + metadata STARs -> ``movie_set`` (an empty SetOfMovies) with
    acquisition, gain and MovieAlignment global shifts. Relative paths are joined to ``root``."""
    from pwem.objects import Acquisition, Movie, MovieAlignment
    optics, mics = read_corrected_micrographs(path)
    mics.require(("rlnMicrographMetadata",), path, "micrographs")

    def resolve(name):
        return os.path.join(root, name) if root and not os.path.isabs(name) else name

    o = optics.row(0)
    metas = [read_micrograph_metadata(resolve(str(m))) for m in mics["rlnMicrographMetadata"]]
    g0 = metas[0].general
    pixel = float(g0.get("rlnMicrographOriginalPixelSize", o.get("rlnMicrographOriginalPixelSize")))
    acq = Acquisition(voltage=o.get("rlnVoltage", g0.get("rlnVoltage")),
                      sphericalAberration=o.get("rlnSphericalAberration"),
                      amplitudeContrast=o.get("rlnAmplitudeContrast"), magnification=10000,
                      dosePerFrame=g0.get("rlnMicrographDoseRate"),
                      doseInitial=g0.get("rlnMicrographPreExposure", 0.0))
    movie_set.setSamplingRate(pixel)
    movie_set.setAcquisition(acq)
    if all(k in g0 for k in ("rlnImageSizeX", "rlnImageSizeY", "rlnImageSizeZ")):
        movie_set.setDim((int(g0["rlnImageSizeX"]), int(g0["rlnImageSizeY"]),
                          int(g0["rlnImageSizeZ"])))
    if metas[0].gain_name:
        movie_set.setGain(resolve(metas[0].gain_name))
    for i, (name, meta) in enumerate(zip(mics["rlnMicrographName"], metas)):
        movie = Movie(location=resolve(meta.movie_name))
        movie.setObjId(i + 1)
        movie.setMicName(str(name))
        movie.setSamplingRate(pixel)
        movie.setAcquisition(acq.clone())
        first = int(meta.frames[0])
        movie.setAlignment(MovieAlignment(first=first, last=first + len(meta.shifts) - 1,
                                          xshifts=meta.shifts[:, 0].tolist(),
                                          yshifts=meta.shifts[:, 1].tolist()))
        movie_set.append(movie)
    return movie_set
