"""Turn the files a program wrote into pwem output objects (shared by the protocols)."""
import os

from ..io import convert


def volume_with_halves(protocol, path, pixel_size, half1=None, half2=None, suffix=""):
    """A pwem Volume for ``path``, with its half maps attached when given."""
    from pwem.objects import Volume
    vol = Volume(location=path)
    vol.setSamplingRate(pixel_size)
    if half1 and half2:
        vol.setHalfMaps([half1, half2])
    return vol


def simulated_dataset_outputs(protocol, sim_dir):
    """Outputs of ProtPolishSimulate from the simulate program's folder: movies (with the earlier
    global alignment), particles (alignment, CTF, coordinates, half-sets), the reference volume
    with its half maps, the mask and the true volume."""
    from pwem.objects import VolumeMask
    from ..programs.simulate import project_files
    f = project_files(sim_dir)
    movies = protocol._createSetOfMovies()
    convert.read_set_of_movies(f["mics"],
                               movies, root=sim_dir)
    particles = protocol._createSetOfParticles()
    convert.read_set_of_particles(f["particles"], particles, root=sim_dir)
    px = particles.getSamplingRate()
    volume = volume_with_halves(protocol, f["reference"], px, f["half1"], f["half2"])
    mask = VolumeMask(location=f["mask"])
    mask.setSamplingRate(px)
    truth = volume_with_halves(protocol, os.path.join(sim_dir, "truth", "volume.mrc"), px)
    return {"outputMovies": movies, "outputParticles": particles, "outputVolume": volume,
            "outputMask": mask, "outputTruthVolume": truth}


def polished_rows(polish_dir, done_path):
    """{row of the polishing job's particles table: (index within its micrograph, path)} for the
    micrographs whose ``done_path(micrograph)`` exists (tracks STAR, shiny stack, ...)."""
    import json
    rows = {}
    for root, _, files in os.walk(os.path.join(polish_dir, "diag")):
        for f in files:
            if not f.endswith(".json"):
                continue
            with open(os.path.join(root, f)) as fh:
                diag = json.load(fh)
            path = done_path(diag["micrograph"])
            if os.path.exists(path):
                for i, row in enumerate(diag["rows"]):
                    rows[row] = (i, path)
    return rows


def shiny_particles(protocol, inp, ids, polish_dir, shiny_dir, box=-1, size=-1):
    """SetOfParticles of the shiny stacks written by programs/bfactors.py into ``shiny_dir``: the
    input particles ``inp`` with new image locations, the same alignment and CTF (shifts scaled
    when the box is rescaled) and their tracks (``_polishTracks``, ``_polishTrackIndex``).
    ``ids``: the particle id of each row of the polishing job's particles table."""
    from pyworkflow.object import Integer, String
    from ..programs.bfactors import shiny_path
    from ..programs.polish import output_paths
    box_in = inp.getXDim() or inp.getFirstItem().getDim()[0]
    box = box_in if box == -1 else box
    size = box if size == -1 else size
    factor = size / float(box)
    stacks = polished_rows(polish_dir, lambda m: shiny_path(shiny_dir, m))
    tracks = polished_rows(polish_dir, lambda m: output_paths(polish_dir, m)["tracks"])
    out = protocol._createSetOfParticles()
    out.copyInfo(inp)
    out.setSamplingRate(inp.getSamplingRate() / factor)
    by_id = {ids[row]: row for row in stacks}
    for item in inp.iterItems(orderBy="id"):
        row = by_id.get(item.getObjId())
        if row is None:
            continue
        p = item.clone()
        index, stack = stacks[row]
        p.setLocation((index + 1, stack))
        p.setSamplingRate(out.getSamplingRate())
        if factor != 1.0 and p.hasTransform():
            p.getTransform().scaleShifts(factor)  # pixels of the rescaled box
        p._polishTracks = String(tracks[row][1])       # RELION _tracks.star of its micrograph
        p._polishTrackIndex = Integer(tracks[row][0])  # its data_<index> block there
        out.append(p)
    out.setDim((size, size, 1))
    return out


def refined_particles(protocol, inp, ids, star_path):
    """The input particles ``inp`` with the refined alignment of the refine program's
    particles.star (row r: particle ``ids[r]``): a projection Transform per particle (origins
    in A converted to pixels of the set), ``_rlnRandomSubset`` and
    ``_rlnMaxValueProbDistribution``; CTF, acquisition and image locations kept."""
    from pwem.objects import Transform
    from pyworkflow.object import Float, Integer
    from ..io.star import read_particles_star
    _, parts = read_particles_star(star_path)
    if len(parts) != len(ids):
        raise ValueError("%s has %d particles, %d were converted" % (star_path, len(parts),
                                                                     len(ids)))
    row_of = {pid: r for r, pid in enumerate(ids)}
    px = inp.getSamplingRate()
    out = protocol._createSetOfParticles()
    out.copyInfo(inp)
    out.setAlignmentProj()
    for item in inp.iterItems(orderBy="id"):
        r = row_of.get(item.getObjId())
        if r is None:
            continue
        p = item.clone()
        angles = [float(parts[k][r]) for k in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")]
        origin = (float(parts["rlnOriginXAngst"][r]), float(parts["rlnOriginYAngst"][r]))
        p.setTransform(Transform(convert.relion_to_matrix(angles, origin, px)))
        p._rlnRandomSubset = Integer(int(parts["rlnRandomSubset"][r]))
        p._rlnMaxValueProbDistribution = Float(float(parts["rlnMaxValueProbDistribution"][r]))
        out.append(p)
    return out


def refinement_fsc(fsc_star, label="", column="rlnFourierShellCorrelation"):
    """pwem FSC from the refine program's fsc.star (x: 1/A, as RELION's rlnResolution): the half
    maps' (default) or another ``column``; None when the file has no such column."""
    from pwem.objects import FSC
    from ..io.star import read_star
    table = read_star(fsc_star)["fsc"]
    if column not in table:
        return None
    fsc = FSC(objLabel=label)
    fsc.setData([float(v) for v in table["rlnResolution"]], [float(v) for v in table[column]])
    return fsc
