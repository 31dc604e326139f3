"""Patch spectra and predictions kept on scratch disk (polish --spectra-memory): the same numbers
as in memory, nothing left behind, and a memory peak that does not grow with the particles."""
import dataclasses
import tracemalloc

import numpy as np
import pytest

from polishplugin.core.motion.micrograph import align_micrograph
from polishplugin.core.motion.patches import correct_defect_spectra, damage_filters, extract_spectra
from polishplugin.core.motion.spectra_store import SpectraStore
from polishplugin.core.simulate.dataset import SimulationConfig, simulate_dataset
from polishplugin.io.mrc import read_mrc
from polishplugin.io.star import read_tracks_star
from polishplugin.programs import polish
from polishplugin.programs.scratch import ScratchPlanes, ScratchSpectra
from polishplugin.tests.test_program_polish import _args, sim  # noqa: F401 (fixture)


def _frames(rng, F=5, shape=(96, 96)):
    return [rng.normal(10, 3, shape).astype(np.float32) for _ in range(F)]


def test_scratch_store_holds_what_the_array_holds(tmp_path):
    rng = np.random.default_rng(0)
    frames = _frames(rng)
    P, n, m = 7, 32, 18
    centres = rng.uniform(20, 76, (P, 2))
    tracks = rng.normal(0, 2, (P, len(frames), 2))
    want, cut = extract_spectra(iter(frames), centres, tracks, n, m)
    store = ScratchSpectra(P, len(frames), m, n, tmp_path, 3 * len(frames) * m * (m // 2 + 1) * 8)
    got, cut2 = extract_spectra(iter(frames), centres, tracks, n, m, store=store, workers=2)
    assert got is store and store.block == 3 and np.array_equal(cut, cut2)
    blocks = [(s, x.copy()) for s, x in store.chunks()]
    assert [s.start for s, _ in blocks] == [0, 3, 6]
    assert np.array_equal(np.concatenate([x for _, x in blocks]), want)
    # defects corrected in the file as in the array
    q = np.rint(centres[:, None, :] + cut).astype(np.int64)
    ys, xs = np.array([40, 50, 60]), np.array([45, 30, 70])
    fills = rng.normal(10, 1, len(frames))
    values = rng.normal(100, 1, 3)
    k1 = correct_defect_spectra(want, q, n, ys, xs, values, fills)
    k2 = correct_defect_spectra(store, q, n, ys, xs, values, fills)
    assert k1 == k2 > 0
    assert np.array_equal(np.concatenate([x.copy() for _, x in store.chunks()]), want)
    store.close()
    planes = ScratchPlanes(P, m, tmp_path)
    a = (rng.normal(size=(P, m, m)) + 1j * rng.normal(size=(P, m, m))).astype(np.complex64)
    planes.write(0, a[:4])
    planes.write(4, a[4:])
    assert np.array_equal(planes[2:6], a[2:6]) and np.array_equal(planes[:], a)
    with pytest.raises(TypeError):
        planes[[0, 2]]
    planes.close()
    assert not list(tmp_path.iterdir())          # unlinked files: nothing left behind


BASE = SimulationConfig(seed=5, n_micrographs=1, micrograph_shape=(512, 512), n_frames=8,
                        particles_per_micrograph=16, box=48, pixel_size=1.5, snr=0.5,
                        half_map_resolution=6.0, defocus_range=(6000.0, 9000.0), min_distance=50)


def _align(ds, mic, store_kind, tmp_path, block=2):
    """align_micrograph of a simulated micrograph with spectra and predictions in memory or on
    scratch (blocks of ``block`` particles); returns (result, traced peak bytes above start)."""
    from polishplugin.core.predict import make_projectors, predict_particles
    from polishplugin.core.ctf import CtfParams
    c = ds.config
    F, n, m = mic.frames.shape[0], 64, 40
    proj = make_projectors(ds.half1, ds.half2, ds.mask)
    ctfs = [CtfParams(u, v, a, c.voltage, c.cs, c.amplitude_contrast)
            for u, v, a in zip(mic.defocus_u, mic.defocus_v, mic.defocus_angle)]
    own, opp = predict_particles(proj, mic.angles, mic.half_set, ctfs, n, c.pixel_size,
                                 opposite="both", crop=m, dtype=np.complex64)
    P = len(mic.centres)
    damage = damage_filters(n, c.pixel_size, F, c.dose_per_frame)
    sig = ds.motion_params.to_pixels(c.dose_per_frame, c.pixel_size)
    init = np.repeat(mic.global_track[None], P, axis=0)
    frames = [mic.frames[f] * (1 if mic.gain is None else mic.gain) for f in range(F)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    if store_kind == "memory":
        store = SpectraStore(P, F, m, n)
    else:
        store = ScratchSpectra(P, F, m, n, tmp_path, block * F * m * (m // 2 + 1) * 8)
        planes = ScratchPlanes(P, m, tmp_path), ScratchPlanes(P, m, tmp_path)
        planes[0].write(0, own)
        planes[1].write(0, opp)
        own, opp = planes
    try:
        res = align_micrograph(iter(frames), mic.centres, own, damage, sig, init, window=4,
                               opposite_predictions=opp, n_frames=F, max_ring=m // 2 - 1,
                               patch_size=n, fcc_box=c.box, spectra_store=store)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        store.close()
    return res, peak


@pytest.fixture(scope="module")
def sims():
    return {P: simulate_dataset(dataclasses.replace(BASE, particles_per_micrograph=P))
            for P in (16, 32)}


def test_scratch_gives_the_tracks_and_fcc_of_memory(sims, tmp_path):
    ds = sims[16]
    mic = ds.micrograph(0)
    mem, _ = _align(ds, mic, "memory", tmp_path)
    disk, _ = _align(ds, mic, "scratch", tmp_path)
    assert mem.fit.converged
    np.testing.assert_allclose(disk.tracks, mem.tracks, rtol=0, atol=1e-6)
    for key in ("num", "wobs", "wpred"):
        a, b = getattr(mem.fcc, key), getattr(disk.fcc, key)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    assert not list(tmp_path.iterdir())


def test_scratch_peak_does_not_grow_with_the_particles(sims, tmp_path, monkeypatch):
    """From 16 to 32 particles the in-memory peak grows by at least the 16 particles' spectra;
    on scratch (blocks of 2 particles) by less than a fifth of that (the CC maps, tracks; the
    patches are transformed 16 at a time either way)."""
    from polishplugin.core.motion import micrograph
    monkeypatch.setattr(micrograph, "BLOCK", 2)     # the prediction sums' blocks as small
    peaks = {}
    for P, ds in sims.items():
        mic = ds.micrograph(0)
        for kind in ("memory", "scratch"):
            peaks[kind, P] = _align(ds, mic, kind, tmp_path)[1]
    F, m = BASE.n_frames, 40
    spectra = 16 * F * m * (m // 2 + 1) * 8
    grow_mem = peaks["memory", 32] - peaks["memory", 16]
    grow_disk = peaks["scratch", 32] - peaks["scratch", 16]
    assert grow_mem >= spectra, (grow_mem, spectra)
    assert grow_disk < 0.2 * spectra, (grow_disk, spectra)


def test_program_spills_with_a_small_budget_and_leaves_nothing(sim, tmp_path, caplog):  # noqa
    ref, low = tmp_path / "mem", tmp_path / "low"
    assert polish.main(_args(sim, ref, "--sigma-vel", "0.5")) == 0
    with caplog.at_level("INFO"):
        # 0.01 MB: less than one particle's spectra, blocks of one particle
        assert polish.main(_args(sim, low, "--sigma-vel", "0.5", "--spectra-memory",
                                 "0.01")) == 0
    assert "kept on scratch disk" in caplog.text and "read back 1 particles" in caplog.text
    done = sorted((ref / "tracks").rglob("*_tracks.star"))
    assert len(done) == 3
    for path in done:
        other = low / path.relative_to(ref)
        np.testing.assert_allclose(read_tracks_star(other), read_tracks_star(path), atol=1e-5)
    for path in sorted((ref / "fcc").rglob("*.mrc")):
        a, b = read_mrc(path), read_mrc(low / path.relative_to(ref))
        a = a[0] if isinstance(a, tuple) else a
        b = b[0] if isinstance(b, tuple) else b
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * np.abs(a).max())
    assert not [p for p in low.rglob("*") if "scratch" in p.name]
    with pytest.raises(SystemExit):
        polish.build_parser().parse_args(["--spectra-memory", "0"])


def test_interrupted_spilling_job_leaves_no_scratch_and_resumes(sim, tmp_path, caplog,  # noqa
                                                                  monkeypatch):
    from polishplugin.core.motion import micrograph
    out = tmp_path / "pol"
    calls, fit = [], micrograph.fit_tracks

    def interrupted(*a, **k):                   # killed while the 2nd micrograph is fitted
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit(*a, **k)
    monkeypatch.setattr(micrograph, "fit_tracks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        polish.main(_args(sim, out, "--sigma-vel", "0.5", "--spectra-memory", "0.01"))
    assert len(list((out / "tracks").rglob("*_tracks.star"))) == 1
    assert not [p for p in out.rglob("*") if "scratch" in p.name]
    monkeypatch.setattr(micrograph, "fit_tracks", fit)
    with caplog.at_level("INFO"):
        assert polish.main(_args(sim, out, "--sigma-vel", "0.5", "--spectra-memory",
                                 "0.01")) == 0
    assert "3 micrographs, 2 to do (1 already done)" in caplog.text
    assert len(list((out / "tracks").rglob("*_tracks.star"))) == 3
