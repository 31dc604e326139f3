"""The refinement kernels of the backend interface side by side, in one run: Fourier-slice
projection (``slice_extract``), back-projection (``backproject_slices``) and E-step scoring
(``estep_scores``), at box 64 and 96, per backend and thread count, each configuration in its own
subprocess (NUMBA_NUM_THREADS, OpenBLAS threads and PoCL threads all set to T).

Work per box n (padding 2):
- slice_extract: ``--orientations`` slices of the padded (2n)^3 transform (complex64, as the
  projector keeps it), every pixel with |k| <= n/2 (the projector's default r_max);
- backproject_slices: ``--orientations`` weighted slices into the half (2n)^3 grid, half-plane
  pixels with |k| <= n/2 - 1 (the back-projector's default), e.g. the significant poses of a
  block of images;
- estep_scores: ``--images`` images x ``--orientations`` orientations x ``--translations`` (all
  integer shifts within a disc of 5 px: 81), half-plane pixels with |k| <= n/2 - 1 (what
  :func:`polishplugin.core.refine.estep.log_likelihoods` passes after folding Friedel pairs).

The row "before" is the E-step code these kernels replaced (the einsum over all n^2 pixels of
the old ``log_likelihoods``), on numpy with T BLAS threads; the back-projection they replaced
(np.add.at spreading) is the numpy backend's loop, so its "before" is the numpy row. "first" is
the first call (numba: compilation or cache load; OpenCL: program build and upload), "call" the
median of the next ``--repeats`` calls.

    python benchmarks/refine_kernels.py [--configs numpy:1 numpy:2 numba:1 numba:2 opencl:1
        opencl:2 before:1 before:2] [--boxes 64 96] [--orientations 2304] [--images 4]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

KERNELS = ("slice_extract", "backproject_slices", "estep_scores")


def _disc_pixels(n, radius, half):
    ky, kx = np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n, indexing="ij")
    keep = np.hypot(ky, kx) <= radius
    if half:
        keep &= (kx > 0) | ((kx == 0) & (ky >= 0))
    return np.stack([kx[keep], ky[keep]], axis=1), np.flatnonzero(keep)


def _inputs(n, orientations, images):
    from polishplugin.core.geometry import euler_to_matrix, random_orientations
    from polishplugin.core.fourier import shift_phase
    rng = np.random.default_rng(0)
    s = 2 * n
    vol = (rng.normal(size=(s,) * 3) + 1j * rng.normal(size=(s,) * 3)).astype(np.complex64)
    rots = euler_to_matrix(*random_orientations(orientations, rng))
    k_slice, _ = _disc_pixels(n, n / 2, half=False)
    k_half, idx = _disc_pixels(n, n // 2 - 1, half=True)
    M = len(k_half)
    values = rng.normal(size=(orientations, M)) + 1j * rng.normal(size=(orientations, M))
    weights = rng.uniform(0, 1, (orientations, M))
    t = np.array([(x, y) for y in range(-5, 6) for x in range(-5, 6) if x * x + y * y <= 25.0])
    a = rng.normal(size=(images, M)) + 1j * rng.normal(size=(images, M))
    b = rng.uniform(0, 1, (images, M))
    p = rng.normal(size=(orientations, M)) + 1j * rng.normal(size=(orientations, M))
    e = shift_phase(n, n, t[:, 0], t[:, 1]).reshape(len(t), -1)[:, idx]
    return dict(n=n, s=s, vol=vol, rots=rots, k_slice=k_slice / n, k_half=k_half, values=values,
                weights=weights, a=a, b=b, p=p, e=e, t=t)


def _before_estep(x):
    """The previous log_likelihoods' cross and power terms: einsum over all n^2 pixels."""
    from polishplugin.core.fourier import shift_phase
    n, rng = x["n"], np.random.default_rng(1)
    N, O = len(x["a"]), len(x["p"])
    y = np.fft.fft2(rng.normal(size=(N, n, n)))
    s = np.ones((N, n, n))
    c = np.ones((N, n, n))
    p = np.fft.fft2(rng.normal(size=(O, n, n)))
    e = shift_phase(n, n, x["t"][:, 0], x["t"][:, 1])

    def run():
        cross = np.einsum("nij,oij,tij->not", np.conj(y) * s * c, p, e, optimize=True).real
        pp = np.einsum("nij,oij->no", s * c * c, np.abs(p) ** 2)
        return 2.0 * cross - pp[:, :, None]
    return run


def _calls(be, x, before):
    s = x["s"]

    def bp():
        d = np.zeros((s, s, s // 2 + 1), dtype=np.complex128)
        w = np.zeros(d.shape)
        be.backproject_slices(d, w, x["rots"], x["k_half"], x["values"], x["weights"], 2)
    slices = None if before else (
        lambda: be.slice_extract(x["vol"], x["rots"], x["k_slice"], s, s // 2))
    est = _before_estep(x) if before else (
        lambda: be.estep_scores(x["a"], x["b"], x["p"], x["e"]))
    return {"slice_extract": slices, "backproject_slices": None if before else bp,
            "estep_scores": est}


def worker(backend, threads, boxes, orientations, images, repeats):
    from polishplugin.backends import get_backend
    before = backend == "before"
    be = get_backend("numpy" if before else backend)
    if backend == "numba":
        import numba
        numba.set_num_threads(threads)
    device = be.configure().split(": ")[-1] if backend == "opencl" else "CPU"
    rows = []
    for n in boxes:
        x = _inputs(n, orientations, images)
        row = {"backend": backend, "threads": threads, "device": device, "box": n,
               "M_slice": len(x["k_slice"]), "M_half": len(x["k_half"]), "T": len(x["t"])}
        for name, call in _calls(be, x, before).items():
            if call is None:
                continue
            t0 = time.perf_counter()
            call()
            first = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
            row[name] = {"first": first, "call": float(np.median(times))}
        rows.append(row)
    print(json.dumps(rows))


def run(backend, threads, args):
    t = str(threads)
    env = dict(os.environ, NUMBA_NUM_THREADS=t, POCL_MAX_PTHREAD_COUNT=t, POCL_CPU_MAX_CU_COUNT=t,
               OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", backend, t, "--boxes"] \
        + [str(b) for b in args.boxes] + ["--orientations", str(args.orientations), "--images",
                                          str(args.images), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(rows, args):
    print("\n| box | kernel | backend | threads | first s | call s | items/s | vs numba:1 |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.boxes:
        at = [r for r in rows if r["box"] == n]
        r0 = at[0]
        items = {"slice_extract": args.orientations * r0["M_slice"],
                 "backproject_slices": args.orientations * r0["M_half"],
                 "estep_scores": args.images * args.orientations * r0["T"]}
        for k in KERNELS:
            ref = [r[k]["call"] for r in at if (r["backend"], r["threads"]) == ("numba", 1)
                   and k in r]
            for r in at:
                if k not in r:
                    continue
                c = r[k]["call"]
                print("| %d | %s | %s | %d | %.3f | %.3f | %.3g | %s |"
                      % (n, k, r["backend"], r["threads"], r[k]["first"], c, items[k] / c,
                         "%.2fx" % (ref[0] / c) if ref else "-"))
    for n in args.boxes:
        r0 = [r for r in rows if r["box"] == n][0]
        print("\nbox %d: items = slice pixels (slice_extract M=%d per slice; backproject_slices "
              "M=%d), (image, orientation, translation) triples (estep_scores, T=%d, M=%d)"
              % (n, r0["M_slice"], r0["M_half"], r0["T"], r0["M_half"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["numpy:1", "numpy:2", "numba:1", "numba:2",
                                                     "opencl:1", "opencl:2", "before:1",
                                                     "before:2"])
    ap.add_argument("--boxes", type=int, nargs="+", default=[64, 96])
    ap.add_argument("--orientations", type=int, default=2304)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.boxes, args.orientations,
                      args.images, args.repeats)
    rows = []
    for c in args.configs:
        be, th = c.split(":")
        try:
            got = run(be, int(th), args)
        except RuntimeError as exc:
            print("%s: failed: %s" % (c, str(exc).strip().splitlines()[-1]), file=sys.stderr)
            continue
        rows.extend(got)
        print("%s done" % c, file=sys.stderr)
    rows.sort(key=lambda r: r["box"])
    report(rows, args)


if __name__ == "__main__":
    main()
