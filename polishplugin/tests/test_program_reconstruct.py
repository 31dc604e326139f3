"""The reconstruct program on RELION files: particles projected from a known volume with known
angles, origins and CTFs come back as that volume; a flipped origin convention would not."""
import json
import shutil

import numpy as np
import pytest

from polishplugin.core.ctf import CtfParams, ctf_2d
from polishplugin.core.fourier import shift_phase
from polishplugin.core.geometry import random_orientations
from polishplugin.core.projector import Projector
from polishplugin.core.simulate.volumes import pseudo_protein
from polishplugin.io.mrc import read_mrc, write_mrc
from polishplugin.io.star import StarTable, read_star, write_particles_star
from polishplugin.programs import reconstruct

N, PX, COUNT = 32, 2.0, 300


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Noiseless particles: projection, CTF, particle centre at image centre - origin / px."""
    d = tmp_path_factory.mktemp("rec")
    rng = np.random.default_rng(5)
    vol = pseudo_protein(N, PX, rng).astype(np.float32)
    write_mrc(d / "truth.mrc", vol, PX)
    rot, tilt, psi = random_orientations(COUNT, rng)
    angles = np.stack([rot, tilt, psi], axis=1)
    origins = rng.uniform(-3, 3, (COUNT, 2))                    # A
    defocus = rng.uniform(8000, 20000, COUNT)
    proj = Projector(vol).project_many(angles, shape=(N, N))
    imgs = np.empty((COUNT, N, N), np.float32)
    for i in range(COUNT):
        c = ctf_2d(CtfParams(defocus[i], defocus[i], 0.0), N, PX)
        s = -origins[i] / PX
        imgs[i] = np.fft.ifft2(proj[i] * c * shift_phase(N, N, s[0], s[1])).real
    write_mrc(d / "stack.mrcs", imgs, PX)
    deg = np.rad2deg(angles)
    parts = {"rlnImageName": ["%06d@stack.mrcs" % (i + 1) for i in range(COUNT)],
             "rlnAngleRot": deg[:, 0], "rlnAngleTilt": deg[:, 1], "rlnAnglePsi": deg[:, 2],
             "rlnOriginXAngst": origins[:, 0], "rlnOriginYAngst": origins[:, 1],
             "rlnDefocusU": defocus, "rlnDefocusV": defocus, "rlnDefocusAngle": np.zeros(COUNT),
             "rlnRandomSubset": 1 + np.arange(COUNT) % 2, "rlnOpticsGroup": np.ones(COUNT, int)}
    optics = StarTable({"rlnOpticsGroupName": ["g1"], "rlnOpticsGroup": [1], "rlnVoltage": [300.0],
                        "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                        "rlnImagePixelSize": [PX], "rlnImageSize": [N]})
    write_particles_star(d / "particles.star", optics, StarTable(parts))
    flipped = dict(parts, rlnOriginXAngst=-origins[:, 0], rlnOriginYAngst=-origins[:, 1])
    write_particles_star(d / "flipped.star", optics, StarTable(flipped))
    return d


def _run(d, star, out):
    assert reconstruct.main(["--particles", str(d / star), "--root", str(d), "--out", str(out),
                             "--truth", str(d / "truth.mrc"), "--batch", "64"]) == 0
    with open(out / "reconstruct.json") as fh:
        return json.load(fh)


def test_known_particles_give_back_the_volume(data, tmp_path):
    rep = _run(data, "particles.star", tmp_path / "ok")
    assert rep["particles_half1"] == rep["particles_half2"] == COUNT // 2
    # noiseless data: half maps agree and match the truth to near Nyquist (4 A)
    assert rep["resolution_0143"] < 4.6
    assert rep["resolution_truth_05"] < 5.0
    h1, px = read_mrc(tmp_path / "ok" / "half1.mrc")
    truth, _ = read_mrc(data / "truth.mrc")
    assert h1.shape == (N, N, N) and px == pytest.approx(PX)
    assert np.corrcoef(h1.ravel(), truth.ravel())[0, 1] > 0.9
    fsc = read_star(tmp_path / "ok" / "fsc.star")
    assert len(fsc["fsc"]["rlnFscAgainstTruth"]) == N // 2 + 1
    assert (tmp_path / "ok" / "fsc.png").exists()
    # the same particles with the origin sign flipped reconstruct clearly worse
    bad = _run(data, "flipped.star", tmp_path / "bad")
    assert bad["resolution_truth_05"] > rep["resolution_truth_05"] + 2.0


def test_missing_stack_is_a_clear_error(data, tmp_path):
    """Neither in the project (--root) nor beside the STAR file (the fallback): refused."""
    moved = tmp_path / "moved.star"
    shutil.copy(data / "particles.star", moved)
    assert reconstruct.main(["--particles", str(moved), "--root",
                             str(tmp_path), "--out", str(tmp_path / "o")]) == 2
