"""The relion_external_reconstruct drop-in: the real STAR written by relion_refine, our Tikhonov
mode against RELION 3.1's own relion_external_reconstruct on the same inputs, RED / CW-RED modes,
bad input, and relion_refine_mpi calling it through RELION_EXTERNAL_RECONSTRUCT_EXECUTABLE."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polishplugin.core.fourier import fsc
from polishplugin.core.geometry import euler_to_matrix
from polishplugin.core.reconstruct import Backprojector, centered_fft
from polishplugin.core.refine.mstep import tau2_from_fsc
from polishplugin.core.refine.update import completed_sums
from polishplugin.core.simulate.particles import simulate_particles
from polishplugin.core.simulate.volumes import lowpass, pseudo_protein
from polishplugin.io.mrc import read_mrc, write_mrc
from polishplugin.io.particle_set import write_particle_set
from polishplugin.programs import external_reconstruct as prog

FIXTURE = Path(__file__).parent / "data" / "external_reconstruct_relion.star"
RELION_EXT = shutil.which("relion_external_reconstruct")
RELION_REFINE = shutil.which("relion_refine_mpi")
needs_relion_ext = pytest.mark.skipif(RELION_EXT is None,
                                      reason="RELION (relion_external_reconstruct) not installed")


def _retarget(star_text, folder, result):
    """The fixture's STAR with its MRC paths moved into ``folder`` and the result renamed."""
    text = re.sub(r"(_rlnExtRecons\w+\s+)/path/to/root/", r"\g<1>%s/" % folder, star_text)
    return re.sub(r"(_rlnExtReconsResult\s+)\S+", r"\g<1>%s" % result, text)


def _with_tau2(star_text, tau2):
    """The STAR with the rlnReferenceTau2 column replaced (rows: index, tau2, FSC)."""
    def row(m):
        return "%12d %12.6e %12.6f" % (int(m.group(1)), tau2[int(m.group(1))], float(m.group(3)))
    return re.sub(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s*$", row, star_text, flags=re.M)


def _with_fsc(star_text, fsc):
    """The STAR with the rlnGoldStandardFsc column replaced."""
    def row(m):
        return "%12d %s %12.6f" % (int(m.group(1)), m.group(2), fsc[int(m.group(1))])
    return re.sub(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s*$", row, star_text, flags=re.M)


@pytest.fixture(scope="module")
def fixture_job(tmp_path_factory):
    """The real STAR (box 96, padding 1, current size 30) with B and K back-projected from 200
    noisy projections of a pseudo-protein, and tau^2 made from the STAR's FSC by eq. 12 on that K
    (as RELION makes it), so that data and prior weigh as in a real run."""
    d = tmp_path_factory.mktemp("extrec")
    rng = np.random.default_rng(7)
    n, px = 96, 1.5
    vol = pseudo_protein(n, px, rng)
    ps = simulate_particles(vol, 200, px, snr=0.5, rng=rng, max_origin_A=0.0, ctf=False)
    bp = Backprojector(n, pad=1)
    rots = euler_to_matrix(ps.angles[:, 0], ps.angles[:, 1], ps.angles[:, 2])
    bp.insert(centered_fft(ps.images), rots)
    root = "run_it001_half1_class001_external_reconstruct"
    write_mrc(d / (root + "_data_real.mrc"), bp.data.real.astype(np.float32), 1.0)
    write_mrc(d / (root + "_data_imag.mrc"), bp.data.imag.astype(np.float32), 1.0)
    write_mrc(d / (root + "_weight.mrc"), bp.weight.astype(np.float32), 1.0)
    job = prog.Job(FIXTURE)
    _, k = completed_sums(bp.data, bp.weight, n, 1)
    tau2 = tau2_from_fsc(job.fsc, k, pad=1, r_max=job.current / 2)
    text = _with_tau2(FIXTURE.read_text(), tau2)
    (d / "ours.star").write_text(_retarget(text, d, d / "ours.mrc"))
    return d, text, vol


def _ours(d, *args, star="ours.star"):
    assert prog.main([*args, str(d / star)]) == 0
    return read_mrc(d / "ours.mrc")[0].astype(np.float64)


def _relion(d, text, *flags):
    star = d / "relion.star"
    star.write_text(_retarget(text, d, d / "relion.mrc"))
    subprocess.run([RELION_EXT, str(star), *flags], check=True, capture_output=True, timeout=300)
    return read_mrc(d / "relion.mrc")[0].astype(np.float64)


def _relerr(a, b, radius=None):
    """|a - b| / |b| over the box, or inside a sphere of ``radius`` voxels about the centre."""
    if radius is not None:
        c = np.arange(a.shape[0]) - a.shape[0] // 2
        r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
        a, b = a[r < radius], b[r < radius]
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_reads_the_real_star():
    job = prog.Job(FIXTURE)
    assert (job.ori, job.pad, job.current, job.fudge) == (96, 1.0, 30, 1.0)
    assert len(job.tau2) == 49 and np.all(job.tau2[16:] == 0) and job.tau2[2] == 1.088527e-04
    assert job.fsc[4] == pytest.approx(0.9997)
    assert job.data_real.endswith("_external_reconstruct_data_real.mrc")
    assert job.pixel_size is None


@needs_relion_ext
def test_tikhonov_matches_relion_external_reconstruct(fixture_job):
    """Same STAR and maps: voxel-by-voxel division against RELION's --skip_gridding (measured
    0.7 % inside a quarter-box sphere, 2.5 % over the box), the default iterative gridding against
    RELION's default (1.4 %, 5.5 %; RELION's blob table is not reproduced exactly)."""
    d, text, vol = fixture_job
    skip, rel_skip = _ours(d, "--skip-gridding"), _relion(d, text, "--skip_gridding")
    assert _relerr(skip, rel_skip, 24) < 0.015 and _relerr(skip, rel_skip) < 0.04
    grid, rel_grid = _ours(d), _relion(d, text)
    assert _relerr(grid, rel_grid, 24) < 0.03 and _relerr(grid, rel_grid) < 0.08
    # and the map is the structure, low-passed by the current size (30 px of 96 at 1.5 A)
    truth = lowpass(vol, 96 * 1.5 / 15, 1.5)
    assert np.corrcoef(grid.ravel(), truth.ravel())[0, 1] > 0.8


def test_red_modes(fixture_job):
    """cw-red at a nominal resolution worse than 10 A (lambda = 0) is the Tikhonov map; red with
    the TV denoiser and lambda = 1 is not."""
    d, _, _ = fixture_job
    tik = _ours(d, "--skip-gridding")
    # the fixture's FSC drops below 0.143 at shell 15.8 of 96: 96 * 3 / 15.8 = 18 A at 3 A/px
    cw0 = _ours(d, "--skip-gridding", "--mode", "cw-red", "--angpix", "3")
    np.testing.assert_allclose(cw0, tik, atol=1e-6 * np.abs(tik).max())
    red = _ours(d, "--skip-gridding", "--mode", "red", "--denoiser", "tv", "--lambda", "1")
    assert _relerr(red, tik) > 1e-3


def test_bad_input_is_one_clear_line(fixture_job, tmp_path, caplog):
    d, text, _ = fixture_job
    star = tmp_path / "missing.star"
    star.write_text(_retarget(text, tmp_path, tmp_path / "out.mrc"))
    assert prog.main([str(star)]) == 2
    assert "data_real.mrc" in caplog.text and "no such file" in caplog.text.lower()
    caplog.clear()
    assert prog.main(["--mode", "cw-red", str(d / "ours.star")]) == 2
    assert "--angpix" in caplog.text
    caplog.clear()
    bad = tmp_path / "pad.star"
    bad.write_text(_retarget(text, d, tmp_path / "out.mrc").replace(
        "_rlnPaddingFactor                          1.000000",
        "_rlnPaddingFactor                          2.000000"))
    assert prog.main([str(bad)]) == 2
    assert "expected (192, 192, 97)" in caplog.text
    assert not (tmp_path / "out.mrc").exists()


def _relion_mpirun():
    near = os.path.join(os.path.dirname(RELION_REFINE or ""), "mpirun")
    return near if os.path.exists(near) else shutil.which("mpirun")


@pytest.mark.skipif(RELION_REFINE is None or _relion_mpirun() is None,
                    reason="RELION (relion_refine_mpi) or mpirun not installed")
def test_relion_refine_runs_with_our_program(tmp_path):
    """relion_refine_mpi auto-refine of 120 particles (box 24, 5 A/px) from a 30 A low-pass of the
    truth, every M-step done by our program (cw-red): it converges and the final map has gained
    the truth's detail beyond the start's 30 A (mean FSC against the truth over shells 5-10,
    30-12 A: 0.06 for the start; 0.29-0.64 for our runs and 0.22-0.64 for RELION's own, which
    vary from run to run at this size)."""
    rng = np.random.default_rng(1)
    n, px, count = 24, 5.0, 120
    vol = pseudo_protein(n, px, rng)
    start = lowpass(vol, 30.0, px)
    write_mrc(tmp_path / "ref.mrc", start, px)
    write_particle_set(tmp_path, simulate_particles(vol, count, px, snr=1.0, rng=rng), px)
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\nexec %s -m polishplugin.programs.external_reconstruct "
                    "--mode cw-red --denoiser tv --angpix %g \"$@\"\n" % (sys.executable, px))
    hook.chmod(0o755)
    (tmp_path / "out").mkdir()
    env = dict(os.environ, RELION_EXTERNAL_RECONSTRUCT_EXECUTABLE=str(hook),
               PYTHONPATH=os.pathsep.join([str(Path(prog.__file__).parents[2]),
                                           os.environ.get("PYTHONPATH", "")]),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [_relion_mpirun(), "-np", "3", RELION_REFINE, "--i", "particles.star",
           "--o", "out/run", "--ref", "ref.mrc", "--ini_high", "30", "--auto_refine",
           "--split_random_halves", "--particle_diameter", "90", "--healpix_order", "1",
           "--auto_local_healpix_order", "3", "--offset_range", "2", "--offset_step", "2",
           "--sym", "C1", "--pad", "2", "--external_reconstruct", "--ctf", "--flatten_solvent",
           "--zero_mask", "--firstiter_cc", "--j", "1", "--dont_combine_weights_via_disc",
           "--pool", "10", "--random_seed", "1"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    calls = re.findall(r"system call for external reconstruction: (\S+)", res.stdout)
    assert len(calls) >= 4 and set(calls) == {str(hook)}
    final = read_mrc(tmp_path / "out" / "run_class001.mrc")[0]
    before, after = fsc(start, vol)[5:11].mean(), fsc(final, vol)[5:11].mean()
    assert after > before + 0.1, (before, after)


def test_tau2_fudge_factor_is_honoured(fixture_job):
    """tau^-2 = 1 / (pad^3 fudge tau^2): fudge 2 with tau^2 halved is the same map, fudge 2 alone
    is not."""
    d, text, _ = fixture_job
    job = prog.Job(d / "ours.star")
    base = _ours(d, "--skip-gridding")
    fudged = text.replace("_rlnTau2FudgeFactor                        1.000000",
                          "_rlnTau2FudgeFactor                        2.000000")
    (d / "fudge.star").write_text(_with_tau2(_retarget(fudged, d, d / "ours.mrc"), job.tau2 / 2))
    np.testing.assert_allclose(_ours(d, "--skip-gridding", star="fudge.star"), base,
                               rtol=1e-5, atol=1e-6 * np.abs(base).max())
    (d / "fudge2.star").write_text(_with_tau2(_retarget(fudged, d, d / "ours.mrc"), job.tau2))
    assert _relerr(_ours(d, "--skip-gridding", star="fudge2.star"), base) > 1e-3


def test_denoiser_and_weights_from_options_or_the_environment(fixture_job, tmp_path,
                                                               monkeypatch, caplog):
    """--unet-weights loads that file: the shipped U-Net with its output layer zeroed is the
    identity (f(x) = x + 0), so RED with it equals RED with the identity denoiser and differs
    from the shipped weights. The same options given through
    $POLISHPLUGIN_EXTERNAL_RECONSTRUCT_ARGS (a launcher with fixed arguments) give the same map,
    and the command line overrides them."""
    pytest.importorskip("torch")
    from polishplugin.core.refine.unet import DEFAULT_WEIGHTS
    d, _, _ = fixture_job
    with np.load(DEFAULT_WEIGHTS) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["out.weight"] = np.zeros_like(arrays["out.weight"])
    arrays["out.bias"] = np.zeros_like(arrays["out.bias"])
    weights = tmp_path / "identity unet.npz"       # a space: quoting through the variable
    np.savez(weights, **arrays)
    red = ["--skip-gridding", "--mode", "red", "--lambda", "1"]
    ident = _ours(d, *red, "--denoiser", "identity")
    zeroed = _ours(d, *red, "--denoiser", "unet", "--unet-weights", str(weights))
    np.testing.assert_allclose(zeroed, ident, atol=1e-5 * np.abs(ident).max())
    shipped = _ours(d, *red, "--denoiser", "unet")
    assert _relerr(shipped, ident) > 1e-3
    monkeypatch.setenv(prog.ARGS_VAR, "--mode red --lambda 1 --denoiser unet --unet-weights '%s'"
                       % weights)
    np.testing.assert_allclose(_ours(d, "--skip-gridding"), zeroed, atol=1e-6 * np.abs(ident).max())
    np.testing.assert_allclose(_ours(d, "--skip-gridding", "--unet-weights", DEFAULT_WEIGHTS),
                               shipped, atol=1e-6 * np.abs(ident).max())
    # weights for another denoiser, or a missing file: one clear line before any work
    with pytest.raises(SystemExit, match="--unet-weights is for --denoiser unet"):
        prog.main(["--denoiser", "tv", str(d / "ours.star")])
    caplog.clear()
    monkeypatch.setenv(prog.ARGS_VAR, "--mode red --denoiser unet --unet-weights %s"
                       % (tmp_path / "none.npz"))
    assert prog.main([str(d / "ours.star")]) == 2
    assert "no such U-Net weights file" in caplog.text


def _band_ratio(a, b, ref, shells):
    """<A, B> / |B|^2 over the Fourier shells ``shells`` of the padding-1 half grid, A and B the
    transforms of a - ref and b - ref with the gridding correction undone: how much of b's
    departure from ref a makes in that band."""
    from polishplugin.core.fourier import half_transform_shells
    from polishplugin.core.refine.relion_grid import map_to_half
    band = np.isin(half_transform_shells(ref.shape[0], 1), shells)
    da, db = map_to_half(a - ref, 1)[band], map_to_half(b - ref, 1)[band]
    return float(np.real(np.vdot(db, da)) / np.real(np.vdot(db, db)))


def test_cw_shells_weights_the_prior_mean_per_shell(fixture_job):
    """--cw-shells with the STAR's FSC 1 up to shell 7 and 1/3 from shell 8 on: "none" is plain
    RED (the paper's eq. 17); "all" keeps the whole denoised prior mean below shell 8 and a
    third of it above (the map between RED's and Tikhonov's there); "final" (the default) leaves
    a half-set's call as plain RED and weights the call for both halves joined (RELION's names
    without _half) by the joined map's FSC, sqrt(2/3 / (4/3)) = sqrt(1/2)."""
    d, text, _ = fixture_job
    fsc = np.where(np.arange(49) < 8, 1.0, 1 / 3)
    (d / "fsc.star").write_text(_with_fsc(_retarget(text, d, d / "ours.mrc"), fsc))
    joined = _with_fsc(_retarget(text, d, d / "ours.mrc"), fsc).replace("_it001_half1_", "_it009_")
    for kind in ("data_real", "data_imag", "weight"):
        name = "run_it%s_class001_external_reconstruct_%s.mrc"
        if not (d / (name % ("009", kind))).exists():
            os.symlink(d / (name % ("001_half1", kind)), d / (name % ("009", kind)))
    (d / "joined.star").write_text(joined)
    red = ["--skip-gridding", "--mode", "red", "--denoiser", "identity", "--lambda", "1"]
    tik = _ours(d, "--skip-gridding", star="fsc.star")
    plain = _ours(d, *red, "--cw-shells", "none", star="fsc.star")
    every = _ours(d, *red, "--cw-shells", "all", star="fsc.star")
    # shells 1-2 and 10-14: away from the step at shell 8 (current size 30: shells below 15);
    # the difference is small at low shells (large tau^2), where the soft mask's leak shows
    low, high = [1, 2], range(10, 15)
    assert _band_ratio(every, plain, tik, low) == pytest.approx(1.0, abs=0.05)
    assert _band_ratio(every, plain, tik, high) == pytest.approx(1 / 3, abs=0.01)
    # "final" is the default
    np.testing.assert_array_equal(_ours(d, *red, star="fsc.star"), plain)
    # the joined call: no shell weight with "none", sqrt(1/2) above shell 8 with "final"
    np.testing.assert_allclose(_ours(d, *red, "--cw-shells", "none", star="joined.star"), plain,
                               rtol=0, atol=0)
    last = _ours(d, *red, star="joined.star")
    assert _band_ratio(last, plain, tik, low) == pytest.approx(1.0, abs=0.05)
    assert _band_ratio(last, plain, tik, high) == pytest.approx(np.sqrt(0.5), abs=0.01)
