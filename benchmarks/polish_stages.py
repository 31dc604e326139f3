"""CPU time of each stage of polishing one micrograph, on a simulated project (issue 14).

The stages are those of ``programs/polish.py`` ``polish_one`` with MotionCorr initial tracks (the
default), called one by one in the same order and with the same arguments, so that each can be
timed: predictions (own + opposite halves), damage filters, frame read (the one read of the movie:
time spent inside the frame iterator, raw sum and gain included), patch extraction with one
cropped transform per particle-frame, defect search on the raw sum, defect fix in the spectra,
noise power, CC maps, sign/amplitude, MAP fit, FCC sums. Projector setup (once per
job) is reported separately. Times are process CPU seconds (``os.times``, user + sys) and wall
seconds (meaningful only on a quiet machine; the load average is printed), ``--threads`` threads (numba, BLAS, transforms, frame
decoding; default one), huge-page advice off as in the programs.

Project (not timed; takes minutes): the one ``benchmarks/vs_relion.py --speed`` simulates, or::

    python -m polishplugin.programs.simulate --out sim --micrographs 4 --mic-size 2048 --frames 32 \
        --particles 60 --box 160 --pixel-size 1.2 --snr 0.035 --tiff --no-figures

Run from the project folder::

    python benchmarks/polish_stages.py --project sim [--save tracks.npz] [--compare old.npz]
        [--data-resolution A] [--patch PX] [--threads T]

``--save`` writes the fitted tracks of every micrograph; ``--compare`` prints the largest track
difference (px) against a file saved before a change.
"""
import argparse
import os
import sys

_T = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, _T)

import numpy as np  # noqa: E402

STAGES = ("predictions", "damage", "frame read", "patches+spectra", "defects", "defect fix",
          "noise", "cc maps", "amplitude", "fit", "fcc")


def cpu():
    """(user, system) CPU seconds of this process and the wall clock (s)."""
    t = os.times()
    return np.array([t.user, t.system, t.elapsed])


class Clock:
    """CPU seconds (user, system) per stage."""
    def __init__(self):
        self.t = {}

    def add(self, name, dt):
        self.t[name] = self.t.get(name, 0.0) + dt

    def run(self, name, func, *a, **k):
        t0 = cpu()
        out = func(*a, **k)
        self.add(name, cpu() - t0)
        return out


def peak_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed_frames(frames, clock):
    it = iter(frames)
    while True:
        t0 = cpu()
        try:
            f = next(it)
        except StopIteration:
            return
        finally:
            clock.add("frame read", cpu() - t0)
        yield f


def polish_stages(mic, inputs, projectors, n, clock, sigmas=None, backend=None, max_ring=None,
                  threads=1, buffer=None):
    """The work of polish_one (init motioncorr, all frames), stage by stage; returns the tracks."""
    from polishplugin.core.motion import micrograph as M
    from polishplugin.core.motion.fit import fit_tracks
    from polishplugin.core.motion.observation import (cc_maps_from_spectra, crop_plane,
                                                      crop_size, noise_power_from_spectra,
                                                      ring_power)
    from polishplugin.core.defects import detect_defects
    from polishplugin.core.motion.patches import (correct_defect_spectra, damage_filters,
                                                  extract_spectra)
    from polishplugin.core.motion.units import MotionParams
    from polishplugin.core.predict import predict_particles
    from polishplugin.io.movies import Movie, read_gain
    from polishplugin.programs.cli import auto_window
    from polishplugin.programs.micrographs import known_defects, summed_frames
    from polishplugin.programs.parallel import read_ahead

    from polishplugin.programs.polish import (DEFAULT_SIGMA_ACC, DEFAULT_SIGMA_DIV,
                                              DEFAULT_SIGMA_VEL)
    if sigmas is None:
        sigmas = (DEFAULT_SIGMA_VEL, DEFAULT_SIGMA_DIV, DEFAULT_SIGMA_ACC)
    from polishplugin.backends import get_backend
    from polishplugin.backends.threads import particle_threads
    F = mic.nframes
    px = inputs.pixel_size
    m = crop_size(n, max_ring)
    backend = particle_threads(get_backend(backend), threads)

    gain = read_gain(mic.gain) if mic.gain else None
    known = known_defects(mic, None, gain)
    preds = clock.run("predictions", predict_particles, projectors, mic.angles, mic.half_sets,
                      mic.ctfs, n, px, crop=m, dtype=np.complex64)
    opp = clock.run("predictions", predict_particles, projectors, mic.angles, mic.half_sets,
                    mic.ctfs, n, px, opposite=True, crop=m, dtype=np.complex64)
    damage = clock.run("damage", lambda: crop_plane(damage_filters(
        n, px, F, mic.dose_per_frame, mic.pre_exposure, mic.voltage), m))
    sig_px = MotionParams(*sigmas).to_pixels(mic.dose_per_frame, px)
    window = auto_window(sig_px[0], F, inputs.box)
    init = np.asarray(mic.initial_tracks[:, :F], dtype=np.float64)
    centres = np.asarray(mic.centres, dtype=np.float64)
    total = np.zeros(mic.shape, dtype=np.float32)
    fills = np.zeros(F)
    with Movie(mic.movie, workers=threads) as movie:
        frames = summed_frames(movie, 0, F, gain, total, known=known)
        frames = timed_frames(read_ahead(frames) if threads > 1 else frames, clock)
        t0 = cpu()
        read0 = clock.t.get("frame read", np.zeros(3)).copy()
        spectra, cut = extract_spectra(frames, centres, init, n, m, None, workers=threads,
                                       check=M._check_patches, out=buffer, fills=fills)
        clock.add("patches+spectra", cpu() - t0 - (clock.t["frame read"] - read0))
    full = clock.run("defects", detect_defects, total, F, gain, known=known, workers=threads)
    ys, xs = np.nonzero(full & ~known)
    q = np.rint(centres[:, None, :] + cut).astype(np.int64)
    clock.run("defect fix", correct_defect_spectra, spectra, q, n, ys, xs,
              total[ys, xs] / F * (1.0 if gain is None else gain[ys, xs]), fills)
    power = clock.run("noise", ring_power, spectra, backend)
    noise = clock.run("noise", noise_power_from_spectra, spectra, power)
    cc = clock.run("cc maps", cc_maps_from_spectra, spectra, preds, damage, window, noise,
                   "likelihood", backend=backend, n=n, max_ring=max_ring)

    def amplitude():
        sign = M._resolve_sign("auto", cc, min(3, window))
        auto = M._auto_cc(preds, damage, noise, "likelihood", max_ring, n)
        return sign, M._amplitude(sign * cc, auto, min(3, window))
    sign, amp = clock.run("amplitude", amplitude)
    fit = clock.run("fit", fit_tracks, cc * (sign * amp), centres, sig_px, init, cut, mode="gp",
                    backend=backend, prior_mean="zero")
    clock.run("fcc", M.fcc_from_spectra, spectra, sign * opp, fit.tracks - cut, power,
              backend=backend, n=n, max_ring=max_ring)
    return fit.tracks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", default=".", help="simulated project folder")
    ap.add_argument("--save", help="write the tracks (npz)")
    ap.add_argument("--compare", help="tracks (npz) of an earlier run: print the max difference")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--data-resolution", type=float, default=0.0,
                    help="as polish's option (0: the reference's resolution, < 0: Nyquist)")
    ap.add_argument("--patch", type=int, default=0, help="as polish's option (0: auto)")
    ap.add_argument("--threads", type=int, default=1, help="as polish's option")
    a = ap.parse_args(argv)
    os.chdir(a.project)
    from polishplugin.programs.cli import no_hugepage_advice
    no_hugepage_advice()   # as the programs do
    from polishplugin.programs.parallel import set_threads
    set_threads(a.threads)
    from polishplugin.io.polish_inputs import load_polish_inputs
    from polishplugin.programs.polish import auto_patch, data_max_ring
    from polishplugin.core.predict import make_projectors
    from polishplugin.programs.simulate import LAYOUT
    inputs = load_polish_inputs(LAYOUT["particles"], LAYOUT["mics"], LAYOUT["postprocess"])
    n = a.patch or auto_patch(inputs, a.data_resolution)
    max_ring = data_max_ring(argparse.Namespace(patch_px=n, data_resolution=a.data_resolution),
                             inputs)
    t0 = cpu()
    projectors = make_projectors(inputs.half1, inputs.half2, inputs.mask,
                                 r_max=0.5 if max_ring is None else (max_ring + 1.0) / n)
    t_proj = cpu() - t0
    # warm-up (numba compilation / cache load, FFT plans): 4 particles of the first micrograph
    import dataclasses
    m0 = inputs.micrographs[0]
    warm = dataclasses.replace(m0, centres=m0.centres[:4], angles=m0.angles[:4],
                               half_sets=m0.half_sets[:4], index=m0.index[:4], ctfs=m0.ctfs[:4])
    polish_stages(warm, inputs, projectors, n, Clock(), backend=a.backend, max_ring=max_ring,
                  threads=a.threads)
    from polishplugin.core.motion.observation import crop_size
    from polishplugin.programs.polish import spectra_buffer
    m = crop_size(n, max_ring)
    buffer = spectra_buffer(max(len(x.centres) * x.nframes for x in inputs.micrographs)
                            * m * (m // 2 + 1))

    tracks = {}
    clocks = []
    pf = 0
    for mic in inputs.micrographs:
        c = Clock()
        tracks[mic.name] = polish_stages(mic, inputs, projectors, n, c, backend=a.backend,
                                         max_ring=max_ring, threads=a.threads, buffer=buffer)
        clocks.append(c)
        pf += len(mic.centres) * mic.nframes
    nm = len(clocks)
    print("patch %d px, data term up to ring %s, %d micrographs, %d particle-frames; projector "
          "setup per job: %.2f CPU-s (%.2f user + %.2f sys); peak RSS %.0f MB"
          % (n, max_ring, nm, pf, t_proj[:2].sum(), t_proj[0], t_proj[1], peak_rss_mb()))
    print("%-13s %12s %14s %10s %10s %12s" % ("stage", "CPU-s / mic", "ms / part-fr", "user s",
                                             "sys s", "wall s / mic"))
    total = np.zeros(3)
    for s in STAGES:
        v = sum((c.t.get(s, np.zeros(3)) for c in clocks), np.zeros(3))
        total += v
        print("%-13s %12.3f %14.3f %10.3f %10.3f %12.3f" % (
            s, v[:2].sum() / nm, 1e3 * v[:2].sum() / pf, v[0] / nm, v[1] / nm, v[2] / nm))
    print("%-13s %12.3f %14.3f %10.3f %10.3f %12.3f" % (
        "total", total[:2].sum() / nm, 1e3 * total[:2].sum() / pf, total[0] / nm, total[1] / nm,
        total[2] / nm))
    print("load average: %s" % open("/proc/loadavg").read().split()[0])
    if a.save:
        np.savez(a.save, **tracks)
    if a.compare:
        old = np.load(a.compare)
        d = max(float(np.max(np.abs(old[k] - tracks[k]))) for k in tracks)
        print("max track difference vs %s: %.3g px" % (a.compare, d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
