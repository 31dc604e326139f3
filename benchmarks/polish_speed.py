"""Speed and memory of one micrograph of the polish program: ``programs/polish.py``'s
``polish_one`` itself (the one read of the movie, with the defect search on the raw sum taken in
the same pass; predictions; patch spectra; CC maps; amplitude; MAP fit; FCC sums; outputs), per
backend and thread count, on a synthetic movie.

For each box a synthetic movie is written once to a temporary MRC (int8 counts, not timed):
particles of a pseudo-protein map (map box min(box, 128); the prediction box is ``box``) at random
orientations with CTF and exposure filter, moved along a smooth drift plus per-particle jitter,
dark on a 1 e/px/frame background with Gaussian counting noise. Each configuration (backend,
threads) then runs in its own subprocess with the program's thread settings (numba threads,
single-threaded BLAS): setup (projectors), one warm-up micrograph (4 particles, same box: numba
compile/cache load and FFT plans), then the timed micrograph read from the MRC (page cache warm),
sigmas 0.2 / 5000 / 2, every frequency up to Nyquist (``--data-resolution -1``), patches of
``--patch-factor`` x the box. Stage wall times come from ``polish_timeline.py``'s timers (the
same stages as for a whole job). Peak memory is the subprocess's VmHWM (= ru_maxrss) after
resetting it with /proc/self/clear_refs just before the timed micrograph (resident set: numpy
buffers, libraries and the movie pages read); "base" is VmRSS at that point.

    python benchmarks/polish_speed.py [--boxes 128 256 384] [--particles 40] [--frames 24]
        [--configs numpy:1 numba:1 numba:2 opencl:2] [--patch-factor 1] [--profile BOX]   # --profile: cProfile, numba, 1 thread

(opencl:T: the OpenCL backend, on PoCL's CPU device with T threads.)

CPU-s per particle-frame = process CPU time of the micrograph / (particles x frames). For the
comparison with RELION, measured side by side, see benchmarks/vs_relion.py.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from polish_timeline import STAGES  # noqa: E402  (the stages timed, as for a whole job)

MIC_SIZE = {128: 2048, 256: 4096, 384: 4096}
PIXEL = 1.0          # A/px
DOSE = 1.0           # e/A^2 per frame = e/px per frame at 1 A/px
SIGMAS = ("0.2", "5000", "2")


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


def _micrograph(movie_path, inp, particles=None):
    """The movie and its particles as the program's inputs hold them."""
    from polishplugin.core.ctf import CtfParams
    from polishplugin.io.movies import Movie
    from polishplugin.io.polish_inputs import MicrographInput
    sel = slice(None) if particles is None else slice(0, particles)
    centres = inp["centres"][sel]
    with Movie(movie_path) as movie:
        shape, F = movie.shape, movie.nframes
    return MicrographInput(
        name="movie_%d.mrc" % len(centres), movie=movie_path, gain=None, nframes=F, shape=shape,
        pixel_size=PIXEL, dose_per_frame=DOSE, pre_exposure=0.0, voltage=300.0,
        shifts=-inp["init"][0], motion_model=None, hot_pixels=np.zeros((0, 2)),
        index=np.arange(len(centres)), centres=centres, angles=inp["angles"][sel],
        ctfs=[CtfParams(u, v, 0.3, 300.0, 2.7, 0.1) for u, v in inp["defocus"][sel]],
        half_sets=inp["halves"][sel])


def worker(args):
    import types

    import polish_timeline
    from polishplugin.core.motion import micrograph as mg
    from polishplugin.core.predict import make_projectors
    from polishplugin.programs import polish
    from polishplugin.programs.cli import resolve_backend
    from polishplugin.programs.parallel import set_blas_threads, set_threads

    t0 = time.perf_counter()
    n = int(round(args.patch_factor * args.box / 2)) * 2
    out = tempfile.mkdtemp(prefix="polish_speed_")
    pa = polish.build_parser().parse_args(
        ["--particles", "-", "--mics", "-", "--half1", "-", "--half2", "-", "--out", out,
         "--backend", args.backend, "--threads", str(args.threads), "--patch", str(n),
         "--data-resolution", "-1", "--sigmas", "given", "--sigma-vel", SIGMAS[0],
         "--sigma-div", SIGMAS[1], "--sigma-acc", SIGMAS[2]])
    set_threads(pa.threads)             # as polish.run
    set_blas_threads(1)
    pa.backend = resolve_backend(pa.backend)
    pa.sigma_mode, sigmas = polish.resolve_sigmas(pa)
    pa.defect_mask, pa.patch_px = None, n
    inputs = types.SimpleNamespace(pixel_size=PIXEL, box=args.box, particles={})
    pa.max_ring = polish.data_max_ring(pa, inputs)
    inp = dict(np.load(args.inputs))
    vol = _volume(min(args.box, 128))
    proj = make_projectors(vol, vol, backend=pa.backend)
    setup_s = time.perf_counter() - t0
    for module, name in polish_timeline.STAGES:
        polish_timeline.timed(module, name)
    kept = {}
    align = mg.align_micrograph

    def keep(*a, **k):            # the result, for the tracks and the fit's iterations
        kept["res"] = align(*a, **k)
        return kept["res"]
    mg.align_micrograph = keep
    polish.polish_one(_micrograph(args.movie, inp, 4), inputs, proj, sigmas, pa, out)  # warm-up
    polish_timeline.TOTAL.clear()
    mic = _micrograph(args.movie, inp)
    reset = _reset_peak()
    base = _rss()["VmRSS"]
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    c0, w0 = time.process_time(), time.perf_counter()
    polish.polish_one(mic, inputs, proj, sigmas, pa, out)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    peak = _rss()["VmHWM"]
    if prof is not None:
        import pstats
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
    shutil.rmtree(out, ignore_errors=True)
    res = kept["res"]
    P, F = res.tracks.shape[:2]
    print(json.dumps(dict(box=args.box, patch=n, backend=args.backend, threads=args.threads,
                          P=P, F=F, wall=wall, cpu=cpu, stages=dict(polish_timeline.TOTAL),
                          setup_s=setup_s, base_mb=base, peak_mb=peak, peak_reset=reset,
                          iterations=res.fit.iterations, tracks=res.tracks.tolist())))


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


def run_config(movie, inputs, box, backend, threads, profile=False, patch_factor=1.0):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(max(threads, 1)), **_ENV1)
    if backend == "opencl":     # PoCL's CPU device: this many threads
        env.update(POCL_MAX_PTHREAD_COUNT=str(threads), POCL_CPU_MAX_CU_COUNT=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--movie", movie, "--inputs",
           inputs, "--boxes", str(box), "--backend", backend, "--threads", str(threads),
           "--patch-factor", str(patch_factor)]
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
    print("\n### Throughput per micrograph (%d frames; numba cold compile %.1f s)\n"
          % (rows[0]["F"], cold))
    print("| box | patch | micrograph | particles | backend | threads | wall s | CPU s | "
          "particle-frames/s/core | CPU-s/particle-frame | peak RSS MB (base) | fit iters |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pf = r["P"] * r["F"]
        print("| %d | %d | %d^2 | %d | %s | %d | %.2f | %.2f | %.1f | %.4f | %.0f (%.0f) | %d |"
              % (r["box"], r["patch"], MIC_SIZE.get(r["box"], 4096), r["P"], r["backend"],
                 r["threads"], r["wall"], r["cpu"], pf / (r["wall"] * r["threads"]),
                 r["cpu"] / pf, r["peak_mb"], r["base_mb"], r["iterations"]))
    stages = [name for _, name in STAGES if any(name in r["stages"] for r in rows)]
    print("\n### Wall time per stage (polish_timeline.py's), ms per particle-frame\n")
    print("| box | backend | threads | " + " | ".join(stages) + " |")
    print("|---|---|---|" + "---|" * len(stages))
    for r in rows:
        pf = r["P"] * r["F"]
        print("| %d | %s | %d | " % (r["box"], r["backend"], r["threads"]) +
              " | ".join("%.2f" % (1e3 * r["stages"].get(s, 0.0) / pf) for s in stages) + " |")


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
                rows.append(run_config(movie, inputs, box, "numba", 1, profile=True,
                                       patch_factor=args.patch_factor))
                continue
            for cfg in args.configs:
                backend, threads = cfg.split(":")
                rows.append(run_config(movie, inputs, box, backend, int(threads),
                                       patch_factor=args.patch_factor))
                print("  %s: %.2f s" % (cfg, rows[-1]["wall"]), file=sys.stderr)
            os.remove(movie)
    if args.save:
        with open(args.save, "w") as fh:
            json.dump(rows, fh)
    print_tables(rows, cold_compile_seconds())


if __name__ == "__main__":
    main()
