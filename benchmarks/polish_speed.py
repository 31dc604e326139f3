"""Speed and memory of Bayesian polishing per micrograph (the per-micrograph work of
``programs/polish.py``: movie sum + defect search, predictions, damage filters and
``align_micrograph`` = patch extraction, noise power, CC maps, amplitude, MAP fit, FCC sums).

For each box a synthetic movie is written once to a temporary MRC (int8 counts, not timed):
particles of a pseudo-protein map (map box min(box, 128); the prediction box is ``box``) at random
orientations with CTF and exposure filter, moved along a smooth drift plus per-particle jitter,
dark on a 1 e/px/frame background with Gaussian counting noise. Each configuration (backend,
threads) then runs in its own subprocess with single-threaded BLAS: setup (projectors), one
warm-up micrograph (4 particles, same box: numba compile/cache load and FFT plans), then the timed
micrograph read frame by frame from the MRC (page cache warm). Peak memory is the subprocess's
VmHWM (= ru_maxrss) after resetting it with /proc/self/clear_refs just before the timed micrograph
(resident set: numpy buffers, libraries and the movie pages read); "base" is VmRSS at that point.

    python benchmarks/polish_speed.py [--boxes 128 256 384] [--particles 40] [--frames 24]
        [--configs numpy:1 numba:1 numba:2 opencl:2] [--patch-factor 1] [--profile BOX]   # --profile: cProfile, numba, 1 thread

(opencl:T: the OpenCL backend, on PoCL's CPU device with T threads.)

CPU-s per particle-frame = process CPU time of the micrograph / (particles x frames). For the
comparison with RELION, measured side by side, see benchmarks/vs_relion.py.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

MIC_SIZE = {128: 2048, 256: 4096, 384: 4096}
PIXEL = 1.0          # A/px
DOSE = 1.0           # e/A^2 per frame = e/px per frame at 1 A/px
STAGES = ("movie sum", "defects", "predictions", "damage", "frame read", "patches", "spectra",
          "noise", "cc maps", "amplitude", "fit", "fcc")


# ------------------------------------------------------------------------------ data (not timed)
def _volume(m):
    from polishplugin.core.simulate.volumes import pseudo_protein
    return pseudo_protein(m, PIXEL, np.random.default_rng([7, m])).astype(np.float32)


def _ctfs(P, rng):
    from polishplugin.core.ctf import CtfParams
    d = rng.uniform(10000, 20000, P)
    return [CtfParams(u, u - 200.0, 0.3, 300.0, 2.7, 0.1) for u in d]


def make_movie(box, P, F, folder, seed=1):
    """Write movie.mrc and inputs.npz for one box; returns their paths."""
    import scipy.fft

    from polishplugin.core.fourier import shift_phase
    from polishplugin.core.geometry import random_orientations
    from polishplugin.core.motion.patches import damage_filters
    from polishplugin.core.predict import make_projectors, predict_particles
    from polishplugin.io.movies import write_movie_mrc

    rng = np.random.default_rng([seed, box])
    ny = nx = MIC_SIZE.get(box, 4096)
    vol = _volume(min(box, 128))
    proj = make_projectors(vol, vol)
    centres = np.column_stack([rng.uniform(box, nx - box, P), rng.uniform(box, ny - box, P)])
    angles = np.column_stack(random_orientations(P, rng))
    halves = rng.integers(1, 3, P)
    ctfs = _ctfs(P, rng)
    preds = predict_particles(proj, angles, halves, ctfs, box, PIXEL)
    damage = damage_filters(box, PIXEL, F, DOSE)
    t = np.arange(F)[:, None]
    drift = np.hstack([3.0 * np.sqrt(t + 1), -2.0 * np.log1p(t)]) - [3.0, 0.0]   # (F, 2) px
    jitter = np.cumsum(rng.normal(0, 0.15, (P, F, 2)), axis=1)
    tracks = drift[None] + jitter
    pos = centres[:, None] + tracks
    q = np.rint(pos).astype(int)
    sig = np.fft.ifft2(preds).real
    c = np.sqrt(0.05 / (F * DOSE * sig.var()))      # full-dose SNR 0.05 over the box
    counts = np.empty((F, ny, nx), np.int8)
    h = box // 2
    for f in range(F):
        lam = np.zeros((ny + box, nx + box), np.float32)
        off = pos[:, f] - q[:, f]
        spec = preds * damage[f] * shift_phase(box, box, off[:, 0], off[:, 1])
        img = scipy.fft.ifft2(spec.astype(np.complex64), axes=(-2, -1)).real
        for p in range(P):
            y0, x0 = q[p, f, 1], q[p, f, 0]          # corner in the padded frame
            lam[y0:y0 + box, x0:x0 + box] += img[p]
        lam = DOSE * (1.0 - c * lam[h:h + ny, h:h + nx])
        noisy = lam + np.sqrt(np.maximum(lam, 0)) * rng.standard_normal((ny, nx), np.float32)
        counts[f] = np.clip(np.rint(noisy), 0, 127)
    movie = os.path.join(folder, "movie_%d.mrc" % box)
    write_movie_mrc(movie, counts, PIXEL)
    inputs = os.path.join(folder, "inputs_%d.npz" % box)
    np.savez(inputs, centres=centres, angles=angles, halves=halves, init=np.repeat(
        drift[None], P, 0), defocus=np.array([[x.defocus_u, x.defocus_v] for x in ctfs]))
    return movie, inputs


# ------------------------------------------------------------------------------ worker
class _Clock:
    """Accumulates wall seconds per stage; wraps functions of a module namespace."""

    def __init__(self):
        self.t = dict.fromkeys(STAGES, 0.0)

    def wrap(self, module, name, stage):
        fun = getattr(module, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fun(*a, **k)
            finally:
                self.t[stage] += time.perf_counter() - t0
        setattr(module, name, timed)

    def frames(self, movie):
        for i in range(movie.nframes):
            t0 = time.perf_counter()
            fr = movie.frame(i)
            self.t["frame read"] += time.perf_counter() - t0
            yield fr


def _rss():
    vals = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                vals[k] = int(v.split()[0]) / 1024.0
    return vals


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def polish_micrograph(movie_path, inp, box, backend, clock, particles=None, mem=None):
    """The per-micrograph work of programs/polish.py:polish_one, with stage times in ``clock``;
    ``mem`` (dict): peak RSS before and during align_micrograph (MB)."""
    from polishplugin.core.ctf import CtfParams
    from polishplugin.core.defects import detect_defects
    from polishplugin.core.motion import micrograph as mg
    from polishplugin.core.motion.patches import damage_filters
    from polishplugin.core.motion.units import MotionParams
    from polishplugin.core.predict import predict_particles
    from polishplugin.io.movies import Movie

    sel = slice(None) if particles is None else slice(0, particles)
    centres, angles, halves = inp["centres"][sel], inp["angles"][sel], inp["halves"][sel]
    ctfs = [CtfParams(u, v, 0.3, 300.0, 2.7, 0.1) for u, v in inp["defocus"][sel]]
    init = inp["init"][sel]
    F = init.shape[1]
    t = clock.t
    with Movie(movie_path) as movie:
        t0 = time.perf_counter()
        raw_sum = movie.sum()
        t1 = time.perf_counter()
        defects = detect_defects(raw_sum, F)
        t2 = time.perf_counter()
        n = int(round(float(os.environ.get("PP_BENCH_PATCH_FACTOR", "1")) * box / 2)) * 2
        preds = predict_particles(inp["proj"], angles, halves, ctfs, n, PIXEL)
        opp = predict_particles(inp["proj"], angles, halves, ctfs, n, PIXEL, opposite=True)
        t3 = time.perf_counter()
        damage = damage_filters(n, PIXEL, F, DOSE)
        t4 = time.perf_counter()
        t["movie sum"] += t1 - t0
        t["defects"] += t2 - t1
        t["predictions"] += t3 - t2
        t["damage"] += t4 - t3
        sig_px = MotionParams(0.2, 5000.0, 2.0).to_pixels(DOSE, PIXEL)
        window = max(4, min(box // 4, int(np.ceil(4 * sig_px[0] * np.sqrt(F))) + 4))
        if mem is not None:
            mem["pre_align_peak_mb"] = _rss()["VmHWM"]
            _reset_peak()
        res = mg.align_micrograph(clock.frames(movie), centres, preds, damage, sig_px, init,
                                  window=window, opposite_predictions=opp, backend=backend,
                                  n_frames=F, defects=defects)
        if mem is not None:
            mem["align_peak_mb"] = _rss()["VmHWM"]
    return res


def _install_clock(clock, backend):
    from polishplugin.backends import get_backend
    from polishplugin.core.motion import micrograph as mg
    clock.wrap(get_backend(backend), "patch_spectra", "spectra")  # OpenCL: enqueued, finished later
    for name, stage in (("extract_patches", "patches"), ("estimate_noise_power", "noise"),
                        ("compute_cc_maps", "cc maps"),
                        ("ring_power", "noise"), ("noise_power_from_spectra", "noise"),
                        ("cc_maps_from_spectra", "cc maps"), ("fcc_from_spectra", "fcc"),
                        ("_auto_cc", "amplitude"),
                        ("_amplitude", "amplitude"), ("_resolve_sign", "amplitude"),
                        ("fit_tracks", "fit"), ("fcc_sums", "fcc")):
        if hasattr(mg, name):
            clock.wrap(mg, name, stage)


def worker(args):
    from polishplugin.core.predict import make_projectors

    t0 = time.perf_counter()
    if args.backend == "numba":
        import numba
        numba.set_num_threads(args.threads)
        from polishplugin.backends import get_backend
        be = get_backend("numba")
        t1 = time.perf_counter()
        be.cc_interp(np.zeros((1, 1, 5, 5), np.float32), np.zeros((1, 1, 2)))
        compile_s = time.perf_counter() - t1
    else:
        compile_s = 0.0
    inp = dict(np.load(args.inputs))
    vol = _volume(min(args.box, 128))
    inp["proj"] = make_projectors(vol, vol, backend=args.backend)
    setup_s = time.perf_counter() - t0
    clock = _Clock()
    _install_clock(clock, args.backend)
    polish_micrograph(args.movie, inp, args.box, args.backend, clock, particles=4)  # warm-up
    clock.t = dict.fromkeys(STAGES, 0.0)
    reset = _reset_peak()
    base = _rss()["VmRSS"]
    mem = {}
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    c0, w0 = time.process_time(), time.perf_counter()
    res = polish_micrograph(args.movie, inp, args.box, args.backend, clock, mem=mem)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    if prof is not None:
        import pstats
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
    P, F = res.tracks.shape[:2]
    print(json.dumps(dict(box=args.box, backend=args.backend, threads=args.threads, P=P, F=F,
                          wall=wall, cpu=cpu, stages=clock.t, compile_s=compile_s,
                          setup_s=setup_s, base_mb=base, peak_mb=max(mem.values()),
                          align_peak_mb=mem["align_peak_mb"],
                          peak_reset=reset, iterations=res.fit.iterations,
                          tracks=res.tracks.tolist(), fcc=res.fcc.num.sum())))


def cold_compile_seconds():
    """First numba call with an empty cache (compilation), in a subprocess."""
    code = ("import time,numpy as np;t=time.perf_counter();"
            "from polishplugin.backends import get_backend;b=get_backend('numba');"
            "b.cc_interp(np.zeros((1,1,5,5),np.float32),np.zeros((1,1,2)));"
            "print(time.perf_counter()-t)")
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d, **_ENV1)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
    return float(out.stdout.split()[-1])


_ENV1 = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def run_config(movie, inputs, box, backend, threads, profile=False):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(max(threads, 1)), **_ENV1)
    if backend == "opencl":     # PoCL's CPU device: this many threads
        env.update(POCL_MAX_PTHREAD_COUNT=str(threads), POCL_CPU_MAX_CU_COUNT=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--movie", movie, "--inputs",
           inputs, "--boxes", str(box), "--backend", backend, "--threads", str(threads)]
    if profile:
        cmd += ["--profile", str(box)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    if profile:
        sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ tables
def print_tables(rows, cold):
    print("\n### Throughput per micrograph (%d frames; numba cold compile %.1f s, cache load "
          "%s)\n" % (rows[0]["F"], cold, ", ".join(sorted({"%.2f s" % r["compile_s"] for r in rows
                                                            if r["backend"] == "numba"}))))
    print("| box | micrograph | particles | backend | threads | wall s | CPU s | "
          "particle-frames/s/core | CPU-s/particle-frame | "
          "peak RSS MB (base) | align peak MB | fit iters |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pf = r["P"] * r["F"]
        cps = r["cpu"] / pf
        print("| %d | %d^2 | %d | %s | %d | %.2f | %.2f | %.1f | %.4f | %.0f (%.0f) | %.0f | %d |"
              % (r["box"], MIC_SIZE.get(r["box"], 4096), r["P"], r["backend"], r["threads"],
                 r["wall"], r["cpu"], pf / (r["wall"] * r["threads"]), cps, r["peak_mb"],
                 r["base_mb"], r["align_peak_mb"], r["iterations"]))
    print("\n### Wall time per stage, ms per particle-frame (before the optimisation the patch FFTs "
          "are inside noise, cc maps and fcc)\n")
    print("| box | backend | threads | " + " | ".join(STAGES) + " |")
    print("|---|---|---|" + "---|" * len(STAGES))
    for r in rows:
        pf = r["P"] * r["F"]
        st = dict(r["stages"])
        st["patches"] -= st["frame read"]          # extraction minus reading the frames
        print("| %d | %s | %d | " % (r["box"], r["backend"], r["threads"]) +
              " | ".join("%.2f" % (1e3 * st[s] / pf) for s in STAGES) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, nargs="+", default=[128, 256, 384])
    ap.add_argument("--particles", type=int, default=40)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--configs", nargs="+", default=["numpy:1", "numba:1", "numba:2"])
    ap.add_argument("--patch-factor", type=float, default=1.0,
                    help="patch = factor x box (programs/polish.py: 1 to 2, the CTF "
                         "delocalisation at the reference's resolution)")
    ap.add_argument("--profile", type=int, default=0, help="cProfile this box (numba, 1 thread)")
    ap.add_argument("--save", help="write the raw results as JSON here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--movie", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="numba", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.worker:
        os.environ["PP_BENCH_PATCH_FACTOR"] = str(args.patch_factor)  # read by the workers
    if args.worker:
        args.box = args.boxes[0]
        return worker(args)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for box in ([args.profile] if args.profile else args.boxes):
            t0 = time.perf_counter()
            movie, inputs = make_movie(box, args.particles, args.frames, folder)
            print("box %d: movie written in %.1f s (not timed)" % (box, time.perf_counter() - t0),
                  file=sys.stderr)
            if args.profile:
                rows.append(run_config(movie, inputs, box, "numba", 1, profile=True))
                continue
            for cfg in args.configs:
                backend, threads = cfg.split(":")
                rows.append(run_config(movie, inputs, box, backend, int(threads)))
                print("  %s: %.2f s" % (cfg, rows[-1]["wall"]), file=sys.stderr)
            os.remove(movie)
    if args.save:
        with open(args.save, "w") as fh:
            json.dump(rows, fh)
    print_tables(rows, cold_compile_seconds())


if __name__ == "__main__":
    main()
