"""The compute backends side by side, in one run: each kernel of the backend interface, then a
whole micrograph of polishing (``polish_speed.py``'s synthetic movie and per-micrograph work).

Kernels at the sizes of a box-256 micrograph (40 particles, 24 frames): ``cc_interp`` on CC
windows of radius 8 (one L-BFGS evaluation), ``interp_trilinear`` on the padded 256^3 transform of
a 128^3 map for 40 slices of 256^2 (the predictions), ``ring_correlation`` on int8 ring products
of a 256 box (k_max 40 px, RELION's split: one TCC evaluation of a training micrograph).
Each configuration (backend:threads; opencl:T = PoCL's CPU device with T threads, or the first GPU
if there is one) runs in its own subprocess; "first" is the first call (OpenCL: program build
from pyopencl's disk cache plus the upload of the constant operand), "call" the median of the
following calls (operand already on the device).

    python benchmarks/backends.py [--configs numpy:1 numba:1 numba:2 opencl:1 opencl:2]
        [--boxes 128 256] [--particles 40] [--frames 24] [--kernels-only]

On a GPU the same command adds the speed-up over numba on one core of that machine.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import polish_speed  # noqa: E402  (the micrograph benchmark's movie and worker)

P, F, RADIUS, BOX, MAP, K_MAX = 40, 24, 8, 256, 128, 40
KERNELS = ("cc_interp", "interp_trilinear", "ring_correlation")


def _inputs():
    from polishplugin.core.motion.tcc import _ring_pixels, split_threshold
    rng = np.random.default_rng(1)
    W = 2 * RADIUS + 1
    cc = rng.normal(size=(P, F, W, W)).astype(np.float32)
    pos = rng.uniform(-3, 3, size=(P, F, 2))
    vol = (rng.normal(size=(2 * MAP,) * 3) + 1j * rng.normal(size=(2 * MAP,) * 3)).astype(
        np.complex64)
    ky, kx = np.meshgrid(np.fft.fftfreq(BOX), np.fft.fftfreq(BOX), indexing="ij")
    ang = rng.uniform(0, 2 * np.pi, size=(P, 3))
    coords = []
    for a, b, c in ang:           # central slices at random orientations (as the projector)
        u = np.array([np.cos(a) * np.cos(b), np.sin(a), np.cos(a) * np.sin(b)])
        v = np.array([-np.sin(a) * np.cos(c), np.cos(a), np.sin(c)])
        v -= u * (u @ v)
        v /= np.linalg.norm(v)
        q = (u[:, None, None] * kx + v[:, None, None] * ky) * 2 * MAP + MAP
        coords.append(q.reshape(3, -1)[::-1])
    coords = np.concatenate(coords, axis=1)
    t_eval = split_threshold(K_MAX)[1]
    idx = _ring_pixels(BOX, t_eval, K_MAX)[0]
    freq = np.rint(np.fft.fftfreq(BOX, 1.0 / BOX)).astype(np.int32)
    kyr, kxr = freq[idx // BOX], freq[idx % BOX]
    q = rng.integers(-127, 128, size=(P, F, len(kxr), 2)).astype(np.int8)
    scale = rng.uniform(0.5, 2, size=(P, F)).astype(np.float32)
    offset = rng.normal(size=(P, F)).astype(np.float32)
    return {"cc_interp": (lambda be: be.cc_interp(cc, pos), P * F),
            "interp_trilinear": (lambda be: be.interp_trilinear(vol, coords), coords.shape[1]),
            "ring_correlation": (lambda be: be.ring_correlation(q, scale, offset, kxr, kyr,
                                                                pos, BOX), P * F),
            "_sizes": {"W": W, "points": int(coords.shape[1]), "M": int(len(kxr))}}


def kernel_worker(backend, threads):
    from polishplugin.backends import get_backend
    if backend == "numba":
        import numba
        numba.set_num_threads(threads)
    be = get_backend(backend)
    device = be.configure().split(": ")[-1] if backend == "opencl" else "CPU"
    work = _inputs()
    sizes = work.pop("_sizes")
    out = {"backend": backend, "threads": threads, "device": device, "sizes": sizes}
    for name, (call, items) in work.items():
        t0 = time.perf_counter()
        call(be)
        first = time.perf_counter() - t0
        times = []
        t_end = time.perf_counter() + 1.0
        while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 50):
            t0 = time.perf_counter()
            call(be)
            times.append(time.perf_counter() - t0)
        out[name] = {"first": first, "call": float(np.median(times)), "items": items}
    print(json.dumps(out))


def run_kernels(backend, threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), POCL_MAX_PTHREAD_COUNT=str(threads),
               POCL_CPU_MAX_CU_COUNT=str(threads), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--kernel-worker", backend,
                          str(threads)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _is_gpu(device):
    return device != "CPU" and "pthread" not in device.lower() and "cpu" not in device.lower()


def print_kernels(rows):
    s = rows[0]["sizes"]
    print("\n### Kernels (P=%d particles, F=%d frames; CC window %d^2; %d slice points; "
          "M=%d ring pixels)\n" % (P, F, s["W"], s["points"], s["M"]))
    print("| kernel | backend | threads | device | first ms | call ms | items/s | vs numba:1 |")
    print("|---|---|---|---|---|---|---|---|")
    ref = {k: r[k]["call"] for r in rows if (r["backend"], r["threads"]) == ("numba", 1)
           for k in KERNELS}
    for k in KERNELS:
        for r in rows:
            x = r[k]
            print("| %s | %s | %d | %s | %.2f | %.3f | %.3g | %s |"
                  % (k, r["backend"], r["threads"], r["device"], 1e3 * x["first"],
                     1e3 * x["call"], x["items"] / x["call"],
                     "%.2fx" % (ref[k] / x["call"]) if k in ref else "-"))


# the stages the backend runs (extract_spectra: with the reading and cutting of the patches,
# host work; polish_timeline.py's stage names)
MOTION = ("extract_spectra", "ring_power", "cc_maps_from_spectra", "fit_tracks",
          "fcc_from_spectra")


def _motion(r):
    return sum(r["stages"].get(s, 0.0) for s in MOTION)


def print_micrographs(rows):
    print("\n### Whole micrograph (polish_speed.py's per-micrograph work, %d frames)\n"
          % rows[0]["F"])
    print("| box | particles | backend | threads | wall s | CPU s | particle-frames/s | "
          "motion s (read + spectra, noise, cc, fit, fcc) | motion vs numba:1 | wall vs numba:1 | "
          "max track diff vs numpy px |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = [x for x in rows if x["box"] == r["box"] and x["backend"] == "numba"
               and x["threads"] == 1]
        npy = [x for x in rows if x["box"] == r["box"] and x["backend"] == "numpy"]
        diff = float(np.abs(np.array(r["tracks"]) - np.array(npy[0]["tracks"])).max()) \
            if npy else float("nan")
        print("| %d | %d | %s | %d | %.2f | %.2f | %.0f | %.2f (%s) | %s | %s | %.1e |"
              % (r["box"], r["P"], r["backend"], r["threads"], r["wall"], r["cpu"],
                 r["P"] * r["F"] / r["wall"], _motion(r),
                 ", ".join("%.2f" % r["stages"].get(s, 0.0) for s in MOTION),
                 "%.2fx" % (_motion(ref[0]) / _motion(r)) if ref else "-",
                 "%.2fx" % (ref[0]["wall"] / r["wall"]) if ref else "-", diff))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+",
                    default=["numpy:1", "numba:1", "numba:2", "opencl:1", "opencl:2"])
    ap.add_argument("--boxes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--particles", type=int, default=40)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--kernels-only", action="store_true")
    ap.add_argument("--kernel-worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.kernel_worker:
        return kernel_worker(args.kernel_worker[0], int(args.kernel_worker[1]))
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs]
    rows = []
    for be, th in configs:
        rows.append(run_kernels(be, th))
        print("kernels %s:%d done" % (be, th), file=sys.stderr)
    print_kernels(rows)
    if args.kernels_only:
        return
    mrows = []
    with tempfile.TemporaryDirectory() as folder:
        for box in args.boxes:
            movie, inputs = polish_speed.make_movie(box, args.particles, args.frames, folder)
            for be, th in configs:
                mrows.append(polish_speed.run_config(movie, inputs, box, be, th))
                print("  box %d %s:%d: %.2f s" % (box, be, th, mrows[-1]["wall"]),
                      file=sys.stderr)
            os.remove(movie)
    print_micrographs(mrows)
    gpu = [r for r in rows if _is_gpu(r["device"])]
    if gpu:
        ref = [r for r in mrows if (r["backend"], r["threads"]) == ("numba", 1)]
        for r in [x for x in mrows if x["backend"] == "opencl"]:
            base = [x for x in ref if x["box"] == r["box"]][0]
            print("GPU %s box %d: %.0f particle-frames/s (motion stages %.0f), %.1fx numba on "
                  "one core (motion stages %.1fx)"
                  % (gpu[0]["device"], r["box"], r["P"] * r["F"] / r["wall"],
                     r["P"] * r["F"] / _motion(r), base["wall"] / r["wall"],
                     _motion(base) / _motion(r)))


if __name__ == "__main__":
    main()
