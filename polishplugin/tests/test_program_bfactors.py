"""The B-factor / recombination program on RELION files, and the eq. 21 fit recovering the
simulator's per-frame B-factors from the FCC of particles at their true tracks."""
import json
import os
import shutil

import mrcfile
import numpy as np
import pytest

from polishplugin.core.ctf import CtfParams
from polishplugin.core.dose.bfactors import fit_bfactors, normalise_gauge, to_relion
from polishplugin.core.dose.fcc import FccAccumulator
from polishplugin.core.fourier import ring_index
from polishplugin.core.motion.patches import extract_patches
from polishplugin.core.predict import make_projectors, predict_particles
from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset
from polishplugin.io.mrc import read_mrc
from polishplugin.io.polish_inputs import load_polish_inputs
from polishplugin.io.star import read_particles_star, read_star
from polishplugin.programs import bfactors, polish, simulate

BOX = 48


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("bf")
    sim = d / "sim"
    simulate.main(["--out", str(sim), "--micrographs", "3", "--mic-size", "320", "--frames", "6",
                   "--particles", "4", "--box", str(BOX), "--pixel-size", "1.5", "--snr", "0.3",
                   "--no-figures", "--seed", "3"])
    inputs = _inputs(sim)
    assert polish.main(inputs + ["--out", str(d / "pol"), "--no-figures"]) == 0
    assert bfactors.main(inputs + ["--polish", str(d / "pol"), "--out", str(d / "bf")]) == 0
    return d


def _inputs(sim):
    return ["--particles", simulate.project_files(sim)["particles"],
            "--mics", simulate.project_files(sim)["mics"],
            "--postprocess", simulate.project_files(sim)["postprocess"], "--root", str(sim)]


def _stacks(out):
    return sorted((out / "Shiny").rglob("*_shiny.mrcs"))


def test_outputs_relion_numbers_weights_and_star(job):
    out = job / "bf"
    info = json.loads((out / "bfactors.json").read_text())
    star = read_star(out / "bfactors.star")["perframe_bfactors"]
    b_rel, c_rel = to_relion(info["bfactors_A2"], info["scales"], info["box"])
    # the FCC on RELION's rings: box/2 + 1 rings of the particle box (the patch is larger)
    assert info["box"] == BOX and json.loads(next((job / "pol" / "diag").rglob("*.json"))
                                             .read_text())["patch_px"] > BOX
    for f in (job / "pol" / "fcc").rglob("*_FCC_*.mrc"):
        assert read_mrc(f)[0].shape == (6, BOX // 2 + 1)
    np.testing.assert_allclose(star["rlnBfactorUsedForSharpening"], b_rel, rtol=1e-9)
    np.testing.assert_allclose(star["rlnFittedInterceptGuinierPlot"], c_rel, atol=1e-12)
    assert list(star["rlnMovieFrameNumber"]) == list(range(6)) and max(info["bfactors_A2"]) == 0
    w, _ = read_mrc(out / "weights.mrc")
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-5)
    assert (out / "logfile.pdf").exists() and (out / "figures" / "fcc_fit.png").exists()
    # particles: the input rows with their alignment and CTF, images in the shiny stacks
    _, orig = read_particles_star(simulate.project_files(job / "sim")["particles"])
    optics, parts = read_particles_star(out / "particles.star")
    assert len(parts) == 12 and int(optics["rlnImageSize"][0]) == BOX
    for lb in ("rlnAngleRot", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnDefocusU"):
        np.testing.assert_array_equal(parts[lb], orig[lb])
    assert all("_shiny.mrcs" in str(n) for n in parts["rlnImageName"])
    assert len(_stacks(out)) == 3
    imgs = mrcfile.open(_stacks(out)[0]).data
    y, x = np.mgrid[:BOX, :BOX] - BOX // 2
    bg = imgs[:, np.hypot(y, x) > 0.375 * BOX]
    np.testing.assert_allclose(bg.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(bg.std(axis=1), 1.0, atol=1e-4)


def test_recombination_geometry_matches_the_extraction(job):
    """Global tracks and uniform weights reproduce the simulator's independently extracted,
    globally aligned particles (same centre, same contrast)."""
    sim = job / "sim"
    f = simulate.project_files(sim)
    inp = load_polish_inputs(f["particles"], f["mics"], f["postprocess"], root=str(sim))
    mic = inp.micrographs[0]
    origins = np.stack([np.asarray(inp.particles[k])[mic.index] for k in
                        ("rlnOriginXAngst", "rlnOriginYAngst")], axis=1) / 1.5
    uniform = np.full((6, 64, 64), 1.0 / 6)
    shiny = bfactors.shiny_micrograph(mic, mic.initial_tracks, uniform, 0, -1, BOX, BOX, origins,
                                      None)
    ref = read_mrc(sim / simulate.LAYOUT["extract_dir"] / "sim_0000.mrcs")[0]
    for a, b in zip(shiny, ref):
        cc = np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))).real
        assert np.unravel_index(cc.argmax(), cc.shape) == (0, 0)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_resume_and_reuse_of_bfactors_star(job, tmp_path):
    out = tmp_path / "bf"
    shutil.copytree(job / "bf", out)
    stacks = _stacks(out)
    before = {p: p.stat().st_mtime_ns for p in stacks}
    first = mrcfile.open(stacks[1]).data.copy()
    os.remove(stacks[1])
    args = _inputs(job / "sim") + ["--polish", str(job / "pol"), "--no-figures"]
    assert bfactors.main(args + ["--out", str(out)]) == 0
    assert stacks[0].stat().st_mtime_ns == before[stacks[0]]
    np.testing.assert_allclose(mrcfile.open(stacks[1]).data, first, atol=1e-5)
    # RELION's numbers read back give the same weights, hence the same shiny particles (another
    # B-factor source is another setting: a new folder)
    reuse = tmp_path / "reuse"
    assert bfactors.main(args + ["--out", str(reuse), "--bfactors",
                                 str(job / "bf" / "bfactors.star")]) == 0
    np.testing.assert_allclose(mrcfile.open(_stacks(reuse)[1]).data, first, atol=1e-4)


def test_fcc_recomputed_from_tracks_when_missing(job, tmp_path):
    pol = tmp_path / "pol"
    shutil.copytree(job / "pol", pol)
    stem = simulate.LAYOUT["mic_dir"] + "/sim_0001"
    for k in ("cc", "w0", "w1"):
        os.remove(pol / "fcc" / ("%s_FCC_%s.mrc" % (stem, k)))
    out = tmp_path / "bf"
    assert bfactors.main(_inputs(job / "sim") + ["--polish", str(pol), "--out", str(out),
                                                 "--only-bfactors", "--no-figures"]) == 0
    for k in ("cc", "w0", "w1"):
        new, _ = read_mrc(out / "fcc" / ("%s_FCC_%s.mrc" % (stem, k)))
        old, _ = read_mrc(job / "pol" / "fcc" / ("%s_FCC_%s.mrc" % (stem, k)))
        # same tracks, same maps; only the integer cut windows may differ from the polishing's
        assert np.abs(new - old)[:, 1:].sum() < 0.1 * np.abs(old)[:, 1:].sum(), k
    assert not _stacks(out)


def test_polishing_folders_listed_in_a_file(job, tmp_path):
    """--polish as a list of folders (a streaming run's, one per micrograph): each micrograph is
    taken from the folder that tracked it; the fit equals the one on the single folder."""
    parts = [tmp_path / "a", tmp_path / "b"]
    for d in parts:
        shutil.copytree(job / "pol", d)
    for path in (job / "pol").rglob("*"):  # sim_0000 in a only, the others in b only
        rel = path.relative_to(job / "pol")
        if path.is_file() and rel.parts[0] in ("tracks", "fcc", "diag"):
            os.remove((parts[1] if "sim_0000" in path.name else parts[0]) / rel)
    listing = tmp_path / "folders.txt"
    listing.write_text("a\nb\n")  # relative to the list's folder
    out = tmp_path / "bf"
    assert bfactors.main(_inputs(job / "sim") + ["--polish", str(listing), "--out", str(out),
                                                 "--only-bfactors", "--no-figures"]) == 0
    assert not (out / "fcc").exists()  # every FCC sum found in its folder, none recomputed
    with open(out / "bfactors.json") as fh, open(job / "bf" / "bfactors.json") as gh:
        np.testing.assert_allclose(json.load(fh)["bfactors_A2"], json.load(gh)["bfactors_A2"],
                                   rtol=1e-9)
    listing.write_text("a\nmissing\n")
    with pytest.raises(SystemExit, match="missing"):
        bfactors.main(_inputs(job / "sim") + ["--polish", str(listing), "--out", str(out)])


def test_smoothness_prior_option(job, tmp_path):
    """--bfac-smooth fits B with the prior (smoother across frames than the paper's fit of the
    same FCC) and is a recorded setting; without it the settings are those of earlier versions."""
    import json
    args = _inputs(job / "sim") + ["--polish", str(job / "pol"), "--only-bfactors"]
    assert bfactors.main(args + ["--out", str(tmp_path / "s"), "--bfac-smooth", "1"]) == 0
    smooth = np.asarray(json.load(open(tmp_path / "s" / "bfactors.json"))["bfactors_A2"])
    plain = np.asarray(json.load(open(job / "bf" / "bfactors.json"))["bfactors_A2"])
    assert np.abs(np.diff(smooth, 2)).sum() < np.abs(np.diff(plain, 2)).sum()
    assert json.load(open(tmp_path / "s" / "settings.json"))["settings"]["bfac_smooth"] == 1
    assert "bfac_smooth" not in json.load(open(job / "bf" / "settings.json"))["settings"]


def test_bad_arguments_are_refused(job, tmp_path):
    args = _inputs(job / "sim") + ["--polish", str(job / "pol"), "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit, match="finer"):
        bfactors.main(args + ["--bfac-maxres", "30"])
    with pytest.raises(SystemExit, match="even"):
        bfactors.main(args + ["--box", "47"])
    with pytest.raises(SystemExit, match="bfac-smooth"):
        bfactors.main(args + ["--bfac-smooth", "-1"])
    with pytest.raises(SystemExit, match="not found"):
        bfactors.main(_inputs(job / "sim") + ["--polish", str(tmp_path / "no"), "--out", "x"])


def test_fit_recovers_simulated_bfactors_at_true_tracks():
    """Simulator with explicit per-frame B_f, C_f (no motion blur, no detector defects); FCC of
    eq. 20 of the particles cut at their TRUE tracks against the opposite half map, in
    expectation over the Poisson noise (noiseless frames; the noise power n^2 * dose_px per
    Fourier pixel added to sum |X|^2). The eq. 21 fit must give the relative B_f within 5 A^2
    and C_f within 0.1."""
    b_true = np.array([-30.0, -5.0, 0.0, -15.0, -40.0, -80.0])
    c_true = np.array([-0.2, 0.0, 0.05, 0.0, -0.1, -0.25])
    cfg = SimulationConfig(seed=1, n_micrographs=1, micrograph_shape=(384, 384), n_frames=6,
                           particles_per_micrograph=16, box=BOX, pixel_size=1.5, sigma_vel=0.01,
                           drift_A=0.0, sigma_acc=-1.0, bfactors=list(b_true),
                           bfactor_scales=list(c_true), hot_pixels=0, dead_columns=0, gain=False,
                           half_map_resolution=3.5)
    ds = simulate_dataset(cfg)
    mic = ds.micrograph(0, keep_expected=True)
    tracks = mic.positions - mic.centres[:, None]
    ctfs = [CtfParams(u, v, a, cfg.voltage, cfg.cs, cfg.amplitude_contrast)
            for u, v, a in zip(mic.defocus_u, mic.defocus_v, mic.defocus_angle)]
    opp = predict_particles(make_projectors(ds.half1, ds.half2, ds.mask), mic.angles,
                            mic.half_set, ctfs, BOX, 1.5, opposite=True)
    sign = -1.0 if cfg.dark_particles else 1.0
    patches, cut = extract_patches(list(mic.expected - cfg.dose_px), mic.centres, tracks, BOX)
    acc = FccAccumulator(6, BOX)
    acc.add(np.fft.fft2(patches.astype(np.float64)), sign * opp, tracks - cut)
    pixels = np.bincount(ring_index(BOX).ravel(), minlength=BOX)[:acc.nrings]
    acc.wobs += len(mic.centres) * BOX * BOX * cfg.dose_px * pixels[None]
    fit = fit_bfactors(acc.fcc(), BOX, 1.5, high_res=4.0, low_res=20.0)
    b_ref, c_ref = normalise_gauge(b_true, c_true)
    np.testing.assert_allclose(fit.bfactors, b_ref, atol=5.0)
    np.testing.assert_allclose(fit.scales, c_ref, atol=0.1)


def test_uninformative_fcc_falls_back_to_exposure_weights(job, tmp_path, caplog):
    """12 particles at SNR 0.3 carry FCC signal; at SNR 0.002 they do not, and the program must
    say so and weight the frames with the exposure filter instead of a fit to noise."""
    info = json.loads((job / "bf" / "bfactors.json").read_text())
    assert "weights" not in info
    sim = tmp_path / "sim"
    simulate.main(["--out", str(sim), "--micrographs", "2", "--mic-size", "320", "--frames", "6",
                   "--particles", "4", "--box", str(BOX), "--pixel-size", "1.5", "--snr",
                   "0.002", "--no-figures", "--seed", "4"])
    inputs = _inputs(sim)
    assert polish.main(inputs + ["--out", str(tmp_path / "pol"), "--no-figures"]) == 0
    with caplog.at_level("WARNING"):
        assert bfactors.main(inputs + ["--polish", str(tmp_path / "pol"), "--out",
                                       str(tmp_path / "bf"), "--no-figures"]) == 0
    assert "too little signal" in caplog.text
    info = json.loads((tmp_path / "bf" / "bfactors.json").read_text())
    assert info["weights"].startswith("exposure filter")
    assert len(_stacks(tmp_path / "bf")) == 2
    # that table reused (a streaming run's fixed or running table): the same fallback
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert bfactors.main(inputs + ["--polish", str(tmp_path / "pol"), "--out",
                                       str(tmp_path / "reuse"), "--no-figures", "--bfactors",
                                       str(tmp_path / "bf" / "bfactors.star")]) == 0
    assert "weighted with the exposure filter" in caplog.text
    for a, b in zip(_stacks(tmp_path / "bf"), _stacks(tmp_path / "reuse")):
        np.testing.assert_allclose(read_mrc(b)[0], read_mrc(a)[0], atol=1e-5)


def test_defects_found_by_polishing_are_reused_without_a_new_search(job, monkeypatch):
    import argparse
    from polishplugin.programs import micrographs
    sim = job / "sim"
    f = simulate.project_files(sim)
    inp = load_polish_inputs(f["particles"], f["mics"], f["postprocess"], root=str(sim))
    args = argparse.Namespace(polish_dirs=[str(job / "pol")], no_defects=False, threads=1)
    searched = {}
    for mic in inp.micrographs:
        diag = json.load(open(polish.output_paths(str(job / "pol"), mic.name)["diag"]))
        first = diag["first_frame"] - 1
        fresh = micrographs.micrograph_defects(mic, first, first + diag["frames"])
        assert fresh.sum() > 0                       # the simulation has hot and dead pixels
        monkeypatch.setattr(bfactors, "micrograph_defects",
                            lambda *a, **k: searched.setdefault(mic.name, True))
        reused = bfactors.defects_of(args, mic, diag, first, first + diag["frames"])
        np.testing.assert_array_equal(reused, fresh)
        other = bfactors.defects_of(args, mic, diag, first, first + diag["frames"] - 1)
        assert other is None            # another frame range: found from the recombination's read
    assert not searched


def _count_reads(monkeypatch):
    """{movie path: passes over it}, counted as reads of its first frame (as samples or as
    floats) while ``monkeypatch`` is active."""
    from polishplugin.io import movies
    reads = {}

    def counting(method):
        def counted(self, i, *a, **k):
            if i == 0:
                reads[self.path] = reads.get(self.path, 0) + 1
            return method(self, i, *a, **k)
        return counted
    monkeypatch.setattr(movies.Movie, "pieces", counting(movies.Movie.pieces))
    monkeypatch.setattr(movies.Movie, "frame", counting(movies.Movie.frame))
    return reads


def test_fcc_recomputed_reading_each_movie_once_with_spectra_on_scratch(job, tmp_path,
                                                                         monkeypatch):
    """Without the polishing run's FCC sums and defect files, each movie is read twice in all
    (the FCC pass, whose defect search comes from the same read, and the recombination), and
    spectra kept on scratch disk give the FCC sums and B-factors of spectra kept in memory."""
    pol = tmp_path / "pol"
    shutil.copytree(job / "pol", pol)
    for path in list((pol / "fcc").rglob("*_FCC_*.mrc")) + list(pol.rglob("*_defects.npy")):
        os.remove(path)
    reads = _count_reads(monkeypatch)
    monkeypatch.setattr(bfactors, "micrograph_defects", lambda *a, **k: 1 / 0)  # no search
    runs = {}
    for mb in ("0.01", "100"):      # 4 particles x 6 frames: ~0.2 MB of spectra a micrograph
        out = tmp_path / ("bf" + mb)
        reads.clear()
        assert bfactors.main(_inputs(job / "sim") + [
            "--polish", str(pol), "--out", str(out), "--spectra-memory", mb,
            "--no-figures"]) == 0
        assert sorted(reads.values()) == [2, 2, 2], reads
        assert len(_stacks(out)) == 3
        assert len(list(out.rglob("*_defects.npy"))) == 3
        assert not list(out.rglob("*.scratch"))
        runs[mb] = out
    for path in runs["100"].joinpath("fcc").rglob("*_FCC_*.mrc"):
        new = read_mrc(runs["0.01"] / path.relative_to(runs["100"]))[0]
        np.testing.assert_allclose(new, read_mrc(path)[0], rtol=1e-5, atol=1e-6 * np.abs(
            read_mrc(path)[0]).max())
    b = [json.load(open(o / "bfactors.json"))["bfactors_A2"] for o in runs.values()]
    np.testing.assert_allclose(b[0], b[1], atol=0.5)


def test_recombination_without_defect_files_reads_each_movie_once(job, tmp_path, monkeypatch):
    """FCC sums from polish but no defect files (a --no-defects polish, an older folder): the
    recombination reads each movie once, finding the defects from that read's sum and correcting
    the sums for them afterwards with their per-frame values (kept during the read where bright;
    with their mean values instead, a hot pixel's frame-to-frame fluctuation stayed: up to 19 %
    of a particle's range here). The shiny particles are those of the saved defects (filled in
    each frame as it was read), and far from those with the defects left in."""
    pol = tmp_path / "pol"
    shutil.copytree(job / "pol", pol)
    for path in pol.rglob("*_defects.npy"):
        os.remove(path)
    reads = _count_reads(monkeypatch)
    monkeypatch.setattr(bfactors, "micrograph_defects", lambda *a, **k: 1 / 0)  # no search
    out = tmp_path / "bf"
    assert bfactors.main(_inputs(job / "sim") + ["--polish", str(pol), "--out", str(out),
                                                  "--no-figures"]) == 0
    assert sorted(reads.values()) == [1, 1, 1], reads
    monkeypatch.undo()
    bare = tmp_path / "bare"            # the defects not filled at all
    assert bfactors.main(_inputs(job / "sim") + ["--polish", str(pol), "--out", str(bare),
                                                  "--no-figures", "--no-defects"]) == 0
    near, far = [], []
    for a, b, c in zip(_stacks(job / "bf"), _stacks(out), _stacks(bare)):
        ref = read_mrc(a)[0]
        d = np.abs(read_mrc(b)[0] - ref) / np.ptp(ref, axis=(1, 2))[:, None, None]
        near.append(d.max())
        far.append((np.abs(read_mrc(c)[0] - ref) / np.ptp(ref)).max())
    assert max(near) < 1e-3 and max(far) > 1000 * max(near), (near, far)


def test_polished_keeps_no_per_particle_lists(job):
    """What bfactors keeps per micrograph for the whole job: the tracks in the given particles'
    order and the diag's scalars, not its per-particle lists (~5 kB of objects per particle)."""
    sim = job / "sim"
    inputs = load_polish_inputs(*(_inputs(sim)[1::2][:3]), root=str(sim))
    mic = inputs.micrographs[0]
    names = polish.particle_names(inputs, mic)
    rev = mic.index[::-1]
    mic.centres, mic.index = mic.centres[::-1], rev
    tracks, diag = bfactors.polished(str(job / "pol"), mic, names[::-1])
    paths = polish.output_paths(str(job / "pol"), mic.name)
    with open(paths["diag"]) as fh:
        full = json.load(fh)
    assert set(full) - set(diag) == set(bfactors.PER_PARTICLE)
    assert all(not isinstance(v, list) or len(v) < 4 for v in diag.values())
    from polishplugin.io.star import read_tracks_star
    np.testing.assert_allclose(tracks, read_tracks_star(paths["tracks"])[::-1]
                               / full["pixel_size"])
