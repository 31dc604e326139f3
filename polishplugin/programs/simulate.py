"""Simulate a movie data set with known truth and write it in RELION's layout.

    python -m polishplugin.programs.simulate --out sim [--micrographs 4 --frames 24 ...]

Writes a RELION project (--out is the project directory; every path inside a STAR file is relative
to it, as RELION writes them; TIFFs in RELION's orientation, see polishplugin/io/movies.py):
  Movies/<mic>.tiff|.mrcs, Movies/gain.mrc                raw counts (+ gain reference: multiply)
  MotionCorr/job002/corrected_micrographs.star            + MotionCorr/job002/Movies/<mic>.star
                                  (metadata with the earlier, noisy global shifts) and <mic>.mrc sums
  Extract/job007/Movies/<mic>.mrcs                        particles cut from the dose-weighted sums
  Refine3D/job010/run_data.star   particles with angles, origins, CTF, half-sets, optics (RELION 3.1)
  Refine3D/job010/run_half{1,2}_class001_unfil.mrc, run_class001.mrc (their mean)
  MaskCreate/job011/mask.mrc, PostProcess/job012/postprocess.star
  truth/volume.mrc, truth/<mic>.npz, truth/tracks/<mic>_tracks.star, truth/truth.json
  figures/*.png|pdf, logfile.pdf
(``project_files`` gives these paths.)

Finished micrographs are skipped when the program is run again (resumable); every file is
written atomically.
"""
import argparse
import dataclasses
import json
import logging
import os
import time
import types

import numpy as np

from ..core import fourier
from ..core.damage import exposure_filter, frame_doses
from ..core.simulate.dataset import SimulationConfig, simulate_dataset
from ..io.atomic import atomic_path
from ..io.motioncorr import write_corrected_micrographs, write_micrograph_metadata
from ..io.movies import write_gain, write_movie_mrc, write_movie_tiff
from ..io.mrc import write_mrc
from ..io.star import StarTable, write_particles_star, write_postprocess, write_tracks_star
from .cli import exit_program, run_program

log = logging.getLogger("polishplugin.simulate")


#: the project's files (relative to the project directory), in RELION's job-folder layout
LAYOUT = {"movies": "Movies", "gain": "Movies/gain.mrc",
          "mics": "MotionCorr/job002/corrected_micrographs.star",
          "mic_dir": "MotionCorr/job002/Movies", "extract_dir": "Extract/job007/Movies",
          "particles": "Refine3D/job010/run_data.star",
          "half1": "Refine3D/job010/run_half1_class001_unfil.mrc",
          "half2": "Refine3D/job010/run_half2_class001_unfil.mrc",
          "reference": "Refine3D/job010/run_class001.mrc", "mask": "MaskCreate/job011/mask.mrc",
          "postprocess": "PostProcess/job012/postprocess.star", "truth": "truth"}


def project_files(out):
    """Absolute paths of a simulated project's files (keys of :data:`LAYOUT`)."""
    return {k: os.path.join(os.path.abspath(out), v) for k, v in LAYOUT.items()}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = SimulationConfig()
    a = p.add_argument
    a("--out", required=True, help="output folder")
    a("--seed", type=int, default=d.seed)
    a("--micrographs", type=int, default=d.n_micrographs)
    a("--mic-size", type=int, nargs="+", default=list(d.micrograph_shape),
      help="micrograph size in px: one value (square) or ny nx")
    a("--frames", type=int, default=d.n_frames)
    a("--particles", type=int, default=d.particles_per_micrograph, help="per micrograph")
    a("--box", type=int, default=d.box, help="particle box = volume size (px)")
    a("--pixel-size", type=float, default=d.pixel_size, help="A/px")
    a("--dose-per-frame", type=float, default=d.dose_per_frame, help="e/A^2")
    a("--snr", type=float, default=d.snr, help="full-dose particle SNR in its box")
    a("--voltage", type=float, default=d.voltage, help="kV")
    a("--cs", type=float, default=d.cs, help="mm")
    a("--q0", type=float, default=d.amplitude_contrast, help="amplitude contrast")
    a("--defocus", type=float, nargs=2, default=list(d.defocus_range), metavar=("MIN", "MAX"),
      help="mean defocus range per micrograph (A)")
    a("--sigma-vel", type=float, default=d.sigma_vel, help="A per e/A^2 (Zivanov 2019 eq. 2)")
    a("--sigma-div", type=float, default=d.sigma_div, help="A (eq. 2)")
    a("--sigma-acc", type=float, default=d.sigma_acc, help="A per e/A^2 (eq. 10); <=0: off")
    a("--drift", type=float, default=d.drift_A, help="stage drift path length (A)")
    a("--half-map-resolution", type=float, default=d.half_map_resolution,
      help="FSC(half1, half2) = 0.143 at this resolution (A)")
    a("--bfactors", type=float, nargs="+", default=None,
      help="explicit per-frame B-factors (A^2) instead of the exposure filter")
    a("--hot-pixels", type=int, default=d.hot_pixels)
    a("--dead-columns", type=int, default=d.dead_columns)
    a("--no-gain", action="store_true", help="ideal detector: no gain reference")
    a("--mtf", choices=["none", "sinc"], default="none")
    a("--bright", action="store_true",
      help="bright particles in the raw movies (default: dark, as real raw data)")
    a("--tiff", action="store_true", help="store counts as deflate TIFF (else MRC stacks)")
    a("--model", default=None, help="atomic model (PDB/mmCIF) for the truth; default phantom")
    a("--no-figures", action="store_true")
    return p


def config_from_args(args):
    shape = tuple(args.mic_size) * (2 if len(args.mic_size) == 1 else 1)
    return SimulationConfig(
        seed=args.seed, n_micrographs=args.micrographs, micrograph_shape=shape[:2],
        n_frames=args.frames, particles_per_micrograph=args.particles, box=args.box,
        pixel_size=args.pixel_size, dose_per_frame=args.dose_per_frame, voltage=args.voltage,
        cs=args.cs, amplitude_contrast=args.q0, defocus_range=tuple(args.defocus),
        sigma_vel=args.sigma_vel, sigma_div=args.sigma_div, sigma_acc=args.sigma_acc,
        drift_A=args.drift, snr=args.snr, dark_particles=not args.bright, model_path=args.model,
        half_map_resolution=args.half_map_resolution, bfactors=args.bfactors,
        gain=not args.no_gain, dead_columns=args.dead_columns, hot_pixels=args.hot_pixels,
        mtf=None if args.mtf == "none" else args.mtf)


def check_config(c):
    """Reject settings that cannot make a valid data set, before any work starts."""
    errors = []
    if min(c.micrograph_shape) < 2 * c.box:
        errors.append("micrographs (%s px) must be at least twice the box (%d px)"
                      % (c.micrograph_shape, c.box))
    if c.n_frames < 2:
        errors.append("need at least 2 frames, got %d" % c.n_frames)
    if c.defocus_range[0] >= c.defocus_range[1] or c.defocus_range[0] <= 0:
        errors.append("defocus range %s must be increasing and positive" % (c.defocus_range,))
    if c.bfactors is not None and len(c.bfactors) != c.n_frames:
        errors.append("%d B-factors given for %d frames" % (len(c.bfactors), c.n_frames))
    if c.model_path and not os.path.exists(c.model_path):
        errors.append("atomic model not found: %s" % c.model_path)
    for name in ("pixel_size", "dose_per_frame", "snr"):
        if getattr(c, name) <= 0:
            errors.append("%s must be positive" % name)
    if errors:
        raise SystemExit("simulate: " + "; ".join(errors))


# ------------------------------------------------------------------------ per micrograph
def aligned_sum(frames, gain, track_px, pixel_size, dose_per_frame, voltage):
    """Dose-weighted sum of gain-corrected frames shifted back along ``track_px`` (F, 2): what an
    earlier global motion correction (MotionCor2-style, with dose weighting) would write:
    sum_f w_f X_f / sqrt(sum_f w_f^2) with w_f the exposure filter of frame f."""
    ny, nx = frames.shape[1:]
    k = fourier.radius_grid(ny, nx, pixel_size)
    doses = frame_doses(len(frames), dose_per_frame)
    acc = np.zeros((ny, nx), dtype=np.complex128)
    wsum = np.zeros((ny, nx))
    for f in range(len(frames)):
        img = frames[f].astype(np.float32) * (gain if gain is not None else 1.0)
        w = exposure_filter(k, doses[f], voltage)
        acc += np.fft.fft2(img) * w * fourier.shift_phase(ny, nx, -track_px[f, 0], -track_px[f, 1])
        wsum += w * w
    return np.fft.ifft2(acc / np.sqrt(np.maximum(wsum, 1e-12))).real.astype(np.float32)


def extract_particles(micrograph, coords, box, invert=True):
    """Particle images (P, box, box) cut at integer ``coords`` (x, y), contrast inverted (bright
    particles, as RELION's extraction with 'invert contrast') and normalised to zero mean and
    unit standard deviation outside a circle of radius 0.4*box (RELION's background)."""
    ny, nx = micrograph.shape
    pad = box
    big = np.pad(micrograph, pad, mode="reflect")
    out = np.empty((len(coords), box, box), dtype=np.float32)
    y, x = np.mgrid[:box, :box] - box // 2
    bg = np.hypot(y, x) > 0.4 * box
    for i, (cx, cy) in enumerate(np.asarray(coords, dtype=int)):
        y0, x0 = cy - box // 2 + pad, cx - box // 2 + pad
        img = big[y0:y0 + box, x0:x0 + box].astype(np.float64)
        if invert:
            img = -img
        img = (img - img[bg].mean()) / max(img[bg].std(), 1e-12)
        out[i] = img
    return out


def micrograph_paths(out, name, tiff):
    f = project_files(out)
    return {"movie": os.path.join(f["movies"], name + (".tiff" if tiff else ".mrcs")),
            "metadata": os.path.join(f["mic_dir"], name + ".star"),
            "sum": os.path.join(f["mic_dir"], name + ".mrc"),
            "stack": os.path.join(f["extract_dir"], name + ".mrcs"),
            "truth": os.path.join(f["truth"], name + ".npz"),
            "tracks": os.path.join(f["truth"], "tracks", name + "_tracks.star")}


def write_micrograph(out, ds, mic, tiff):
    """All files of one simulated micrograph; the truth npz is written last (the 'done' mark)."""
    c = ds.config
    paths = micrograph_paths(out, mic.name, tiff)
    for p in paths.values():
        os.makedirs(os.path.dirname(p), exist_ok=True)
    if tiff:
        write_movie_tiff(paths["movie"], mic.frames)
    else:
        write_movie_mrc(paths["movie"], mic.frames.astype(np.float32), c.pixel_size)
    ny, nx = c.micrograph_shape
    general = {"rlnImageSizeX": nx, "rlnImageSizeY": ny, "rlnImageSizeZ": c.n_frames,
               "rlnMicrographMovieName": os.path.relpath(paths["movie"], out),
               "rlnMicrographBinning": 1.0, "rlnMicrographOriginalPixelSize": c.pixel_size,
               "rlnMicrographDoseRate": c.dose_per_frame,
               "rlnMicrographPreExposure": c.pre_exposure, "rlnVoltage": c.voltage}
    if mic.gain is not None:
        general["rlnMicrographGainName"] = LAYOUT["gain"]
    # MotionCor convention: the shift that aligns frame f is minus the content's displacement
    write_micrograph_metadata(paths["metadata"], general, -mic.global_track)
    total = aligned_sum(mic.frames, mic.gain, mic.global_track, c.pixel_size, c.dose_per_frame,
                        c.voltage)
    write_mrc(paths["sum"], total, c.pixel_size)
    write_mrc(paths["stack"], extract_particles(total, mic.coords, c.box, invert=c.dark_particles),
              c.pixel_size, stack=True)
    centres = mic.centres
    write_tracks_star(paths["tracks"], (mic.positions - centres[:, None, :]) * c.pixel_size)
    with atomic_path(paths["truth"]) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, positions=mic.positions, centres=centres, coords=mic.coords,
                     origins_A=mic.origins_A, angles=mic.angles, half_set=mic.half_set,
                     global_track=mic.global_track, global_track_true=mic.global_track_true,
                     hot_pixels=mic.hot_pixels, defocus_u=mic.defocus_u, defocus_v=mic.defocus_v,
                     defocus_angle=mic.defocus_angle)
    return paths


def particle_rows(out, ds, mic, paths):
    n = len(mic.coords)
    mic_name = os.path.relpath(paths["sum"], out)
    stack = os.path.relpath(paths["stack"], out)
    deg = np.rad2deg(mic.angles)
    return {
        "rlnImageName": ["%06d@%s" % (i + 1, stack) for i in range(n)],
        "rlnMicrographName": [mic_name] * n,
        "rlnCoordinateX": mic.coords[:, 0].astype(float),
        "rlnCoordinateY": mic.coords[:, 1].astype(float),
        "rlnAngleRot": deg[:, 0], "rlnAngleTilt": deg[:, 1], "rlnAnglePsi": deg[:, 2],
        "rlnOriginXAngst": mic.origins_A[:, 0], "rlnOriginYAngst": mic.origins_A[:, 1],
        "rlnDefocusU": mic.defocus_u, "rlnDefocusV": mic.defocus_v,
        "rlnDefocusAngle": mic.defocus_angle, "rlnPhaseShift": np.zeros(n),
        "rlnCtfBfactor": np.zeros(n), "rlnRandomSubset": mic.half_set.astype(int),
        "rlnOpticsGroup": np.ones(n, dtype=int)}


def optics_table(c, with_image=True):
    cols = {"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
            "rlnMicrographOriginalPixelSize": [c.pixel_size], "rlnVoltage": [c.voltage],
            "rlnSphericalAberration": [c.cs], "rlnAmplitudeContrast": [c.amplitude_contrast]}
    if with_image:
        cols.update({"rlnImagePixelSize": [c.pixel_size], "rlnImageSize": [c.box],
                     "rlnImageDimensionality": [2], "rlnCtfDataAreCtfPremultiplied": [0]})
    else:
        cols["rlnMicrographPixelSize"] = [c.pixel_size]
    return StarTable(cols)


# ------------------------------------------------------------------------ whole data set
def write_reference(out, ds):
    c = ds.config
    f = project_files(out)
    for path, vol in ((f["half1"], ds.half1), (f["half2"], ds.half2),
                      (f["reference"], 0.5 * (ds.half1 + ds.half2)),
                      (f["mask"], ds.mask), (os.path.join(f["truth"], "volume.mrc"), ds.volume)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_mrc(path, vol.astype(np.float32), c.pixel_size)
    curve = fourier.fsc(ds.half1 * ds.mask, ds.half2 * ds.mask)
    res = fourier.resolution_at(curve, c.box, c.pixel_size)
    shells = np.arange(len(curve))
    fsc = {"rlnSpectralIndex": shells,
           "rlnResolution": shells / (c.box * c.pixel_size),
           "rlnAngstromResolution": np.where(shells > 0, c.box * c.pixel_size / np.maximum(shells, 1), 999.0),
           "rlnFourierShellCorrelationCorrected": curve}
    os.makedirs(os.path.dirname(f["postprocess"]), exist_ok=True)
    write_postprocess(f["postprocess"], LAYOUT["half1"], LAYOUT["half2"], res, fsc,
                      mask=LAYOUT["mask"])
    return curve, res


def write_truth_json(out, ds, names, fsc_res):
    c = ds.config
    truth = {"config": dataclasses.asdict(c), "contrast": ds.contrast,
             "sigmas": {"sigma_vel": c.sigma_vel, "sigma_div": c.sigma_div,
                        "sigma_acc": c.sigma_acc},
             "sigmas_px": list(ds.motion_sigmas_px), "half_map_fsc_0143_A": fsc_res,
             "micrographs": names,
             "track_convention": "tracks are particle displacements (A) relative to the refined "
                                 "centre = coord - origin/pixel; MotionCorr shifts = -track"}
    with atomic_path(os.path.join(out, "truth", "truth.json")) as tmp:
        with open(tmp, "w") as fh:
            json.dump(truth, fh, indent=1, default=lambda o: list(o) if isinstance(o, tuple) else str(o))


def run(args):
    c = config_from_args(args)
    check_config(c)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    ds = simulate_dataset(c)
    curve, res = write_reference(out, ds)
    log.info("reference: %d^3 at %.3f A/px, half-map FSC 0.143 at %.2f A", c.box, c.pixel_size, res)
    if ds.detector.gain is not None:
        os.makedirs(os.path.join(out, LAYOUT["movies"]), exist_ok=True)
        write_gain(project_files(out)["gain"], ds.detector.gain.astype(np.float32))
    rows, mic_rows = [], {"rlnMicrographName": [], "rlnMicrographMetadata": [],
                          "rlnOpticsGroup": []}
    names = []
    first = None
    for i in range(len(ds)):
        t1 = time.time()
        name = "sim_%04d" % i
        paths = micrograph_paths(out, name, args.tiff)
        if os.path.exists(paths["truth"]):
            log.info("micrograph %d/%d (%s): already done, skipped", i + 1, len(ds), name)
            mic = None
        else:
            mic = ds.micrograph(i)
            paths = write_micrograph(out, ds, mic, args.tiff)
            log.info("micrograph %d/%d (%s): %d particles, %.1f s", i + 1, len(ds), name,
                     len(mic.coords), time.time() - t1)
        if mic is None:
            mic = _reload_truth(paths, name, c)
        rows.append(particle_rows(out, ds, mic, paths))
        mic_rows["rlnMicrographName"].append(os.path.relpath(paths["sum"], out))
        mic_rows["rlnMicrographMetadata"].append(os.path.relpath(paths["metadata"], out))
        mic_rows["rlnOpticsGroup"].append(1)
        names.append(name)
        if first is None:
            first = (mic, paths)
    parts = {k: np.concatenate([np.asarray(r[k]) for r in rows]) for k in rows[0]}
    files = project_files(out)
    write_particles_star(files["particles"], optics_table(c), StarTable(parts))
    write_corrected_micrographs(files["mics"], optics_table(c, with_image=False),
                                StarTable(mic_rows))
    write_truth_json(out, ds, names, res)
    if not args.no_figures:
        from .cli import job_figures
        job_figures().simulation_figures(out, os.path.join(out, "figures"))
    log.info("simulated %d micrographs, %d particles in %.1f s -> %s", len(ds),
             len(parts["rlnImageName"]), time.time() - t0, out)


def _reload_truth(paths, name, c):
    """Truth of a micrograph written by an earlier run (for the STAR files of a resumed run)."""
    with np.load(paths["truth"]) as z:
        return types.SimpleNamespace(name=name, **{k: z[k] for k in z.files})


def main(argv=None):
    return run_program(build_parser, run, argv)


if __name__ == "__main__":
    exit_program(main())
