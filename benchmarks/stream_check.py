"""Cost of one check of ProtPolishStreaming's generator step, and of converting one micrograph's
movie and particles, against the size of the input sets: N - 1 micrographs (10 particles each)
already seen, then one more arrives.

    python benchmarks/stream_check.py [--sizes 10 1000] [--repeats 5]

Prints, per N, the median wall seconds of: the incremental check (``_check``: the items added
since the last check, read by id and matched); the whole-set re-match the check did before
(``match_particles_to_movies`` on freshly opened sets, every check); the conversion of the new
micrograph (``_convertMicrographs``: its movie and particles fetched by id); and a plain scan of
every particle and movie, the least the former conversion (filtering whole sets) cost.
Movie files are not needed (the sets carry their dimensions).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time


def build_sets(folder, n_mics, per_mic=10):
    """Open SetOfMovies / SetOfParticles (alignment, CTF, coordinates, half-sets) of ``n_mics``
    micrographs."""
    from pwem.objects import (Acquisition, CTFModel, Coordinate, Movie, MovieAlignment,
                              Particle, SetOfMovies, SetOfParticles, Transform)
    from pyworkflow.object import Integer, Set
    import numpy as np
    movies = SetOfMovies(filename=os.path.join(folder, "movies.sqlite"))
    parts = SetOfParticles(filename=os.path.join(folder, "particles.sqlite"))
    acq = Acquisition(voltage=300, sphericalAberration=2.7, amplitudeContrast=0.1,
                      magnification=50000, dosePerFrame=1.25, doseInitial=0.0)
    for s in (movies, parts):
        s.setSamplingRate(1.5)
        s.setAcquisition(acq)
    movies.setDim((384, 384, 8))
    parts.setDim((48, 48, 1))
    parts.setAlignmentProj()
    parts.setHasCTF(True)

    def add(i):
        name = "mic_%05d.tiff" % i
        m = Movie(location=os.path.join(folder, name))
        m.setMicName(name)
        m.setAlignment(MovieAlignment(first=1, last=8, xshifts=[0.1] * 8, yshifts=[0.2] * 8))
        movies.append(m)
        for j in range(per_mic):
            p = Particle(location=(j + 1, os.path.join(folder, "mic_%05d_parts.mrcs" % i)))
            p.setSamplingRate(1.5)
            p.setAcquisition(acq)
            c = Coordinate()
            c.setPosition(50 + 20 * j, 60)
            c.setMicName("Movies/mic_%05d.mrc" % i)
            p.setCoordinate(c)
            ctf = CTFModel()
            ctf.setStandardDefocus(15000.0, 14000.0, 30.0)
            p.setCTF(ctf)
            p.setTransform(Transform(np.eye(4)))
            p._rlnRandomSubset = Integer(1 + j % 2)
            parts.append(p)
    for i in range(n_mics - 1):
        add(i)
    for s in (movies, parts):
        s.setStreamState(Set.STREAM_OPEN)
        s.write()
    return movies, parts, add


def measure(n_mics, repeats):
    from pyworkflow.project import Manager
    from polishplugin.io.convert import match_particles_to_movies
    from polishplugin.protocols import ProtPolishStreaming
    from polishplugin.protocols.protocol_polish_stream import _StreamState, _fresh

    class Holder:
        proj = Manager().createProject("stream_check_%d" % n_mics)
    os.chdir(Holder.proj.getPath())   # protocols write relative to the project folder
    res = {"check": [], "rematch": [], "convert": [], "scan": []}
    for r in range(repeats):
        with tempfile.TemporaryDirectory(prefix="stream_check_") as tmp:
            movies, parts, add = build_sets(tmp, n_mics)
            prot = Holder.proj.newProtocol(ProtPolishStreaming)
            Holder.proj.saveProtocol(prot)
            prot.inputMovies.set(movies)
            prot.inputParticles.set(parts)
            state = _StreamState()
            prot._check(state)  # the N - 1 micrographs seen before
            add(n_mics - 1)     # the new one arrives
            movies.write()
            parts.write()
            t0 = time.perf_counter()
            prot._check(state)
            res["check"].append(time.perf_counter() - t0)
            assert len(state.unclaimed) == n_mics, len(state.unclaimed)
            t0 = time.perf_counter()
            m, p = _fresh(prot.inputMovies), _fresh(prot.inputParticles)
            names, _ = match_particles_to_movies(p, m)
            m.close()
            p.close()
            res["rematch"].append(time.perf_counter() - t0)
            assert len(names) == 10 * n_mics
            key = prot._newPass(state, "mic_%05d.tiff" % (n_mics - 1))
            t0 = time.perf_counter()
            prot._convertMicrographs(prot._passDir(key), [key])
            res["convert"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m, p = _fresh(prot.inputMovies), _fresh(prot.inputParticles)
            n = sum(1 for _ in p.iterItems()) + sum(1 for _ in m.iterItems())
            m.close()
            p.close()
            res["scan"].append(time.perf_counter() - t0)
            assert n == 11 * n_mics
    return {k: statistics.median(v) for k, v in res.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 1000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from polishplugin.programs.scipion_env import ensure_headless_scipion_env
    ensure_headless_scipion_env(tempfile.mkdtemp(prefix="stream_check_home_"))
    print("| micrographs (x10 particles) | incremental check (s) | whole-set re-match, "
          "former check (s) | convert one micrograph (s) | scan of both sets, former "
          "conversion's floor (s) |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        r = measure(n, args.repeats)
        print("| %d | %.4f | %.4f | %.4f | %.4f |" % (n, r["check"], r["rematch"], r["convert"],
                                                     r["scan"]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
