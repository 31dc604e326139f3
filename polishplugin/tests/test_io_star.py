"""STAR reading/writing: real RELION files, round trips, emtable interoperability, bad input."""
import glob
import logging
import os

import numpy as np
import pytest

from polishplugin.io.errors import InputError
from polishplugin.io.motioncorr import (read_corrected_micrographs, read_micrograph_metadata,
                                        write_corrected_micrographs, write_micrograph_metadata)
from polishplugin.io.star import (StarTable, read_block, read_particles_star, read_postprocess,
                                  read_star,
                                  read_tracks_star, write_particles_star, write_postprocess,
                                  write_star, write_tracks_star)

DATA = os.path.join(os.path.dirname(__file__), "data")
SHARED = (glob.glob("/work/shared/data/star/*.star")
          + glob.glob("/work/shared/data/particles/*.star"))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(DATA, "*.star")) + SHARED))
def test_every_real_file_parses(path):
    blocks = read_star(path)
    assert blocks and all(len(t) > 0 for t in blocks.values())


def test_relion31_values():
    optics, parts = read_particles_star(os.path.join(DATA, "relion31.star"))
    assert optics["rlnImagePixelSize"][0] == pytest.approx(2.806)
    assert optics["rlnImageSize"][0] == 256 and optics["rlnImageSize"].dtype.kind == "i"
    assert len(parts) == 5 and parts["rlnOpticsGroup"].tolist() == [1] * 5
    assert parts["rlnAngleRot"][0] == pytest.approx(-102.30296)
    assert parts["rlnOriginYAngst"][3] == pytest.approx(-0.33640)
    assert parts["rlnImageName"][1] == "000002@relion31.mrcs"


def test_trpv1_values():
    optics, parts = read_particles_star(os.path.join(DATA, "trpv1_small_stack.star"))
    assert optics.row(0)["rlnOpticsGroup"] == 7 and optics["rlnImageSize"][0] == 48
    assert len(parts) == 10
    assert parts["rlnAngleRot"][[0, 9]].tolist() == [-30.073301, -167.644836]
    assert parts["rlnAngleTilt"][2] == 22.135572 and parts["rlnAnglePsi"][7] == 24.697960
    assert parts["rlnRandomSubset"].tolist() == [2, 1] * 5
    assert parts["rlnDefocusU"][4] == 14657.509766


def test_relion5_optics():
    optics, parts = read_particles_star(os.path.join(DATA, "relion5.star"))
    assert len(parts) == 17 and optics["rlnVoltage"][0] == 100.0
    assert optics["rlnOddZernike"][0].startswith("[0.068")


def test_pre31_particles_get_one_optics_group():
    optics, parts = read_particles_star(os.path.join(DATA, "empiar_10076_7.star"))
    assert len(optics) == 1 and len(parts) == 7
    # 5 um detector pixel / 38168x magnification = 1.31 A
    assert optics["rlnImagePixelSize"][0] == pytest.approx(5 / 38168 * 1e4)
    assert optics["rlnVoltage"][0] == 300 and optics["rlnAmplitudeContrast"][0] == 0.07
    assert "rlnVoltage" not in parts and parts["rlnOpticsGroup"].tolist() == [1] * 7
    assert parts["rlnMicrographName"][0] == "1"  # names stay strings even when numeric


def test_postprocess_values(tmp_path):
    pp = read_postprocess(os.path.join(DATA, "postprocess_relion3.star"))
    assert pp["final_resolution"] == pytest.approx(16.363636)
    assert pp["half1"] == "average_symmetrized_ref_001_ite_0008.mrc" and pp["mask"] == "mask.mrc"
    assert pp["pixel_size"] == pytest.approx(7.5, rel=1e-4)  # file was made with --angpix 7.5
    assert len(pp["fsc"]) == 49 and pp["fsc"]["rlnFourierShellCorrelationCorrected"][24] == 0.830088
    write_postprocess(tmp_path / "pp.star", "h1.mrc", "h2.mrc", 3.2, pp["fsc"], mask="m.mrc")
    back = read_postprocess(tmp_path / "pp.star")
    assert back["final_resolution"] == 3.2 and back["mask"] == "m.mrc"
    assert np.array_equal(back["fsc"]["rlnResolution"], pp["fsc"]["rlnResolution"])


def test_generic_round_trip_keeps_precision_and_types(tmp_path):
    general = StarTable({"rlnFinalResolution": [3.1], "rlnMaskName": ["dir with space/m.mrc"]},
                        loop=False)
    tau = StarTable({"rlnSpectralIndex": np.arange(4),
                     "rlnReferenceTau2": np.array([1.439174e-05, 1e-12, 0.0, 123456.789012345]),
                     "rlnImageName": ["1@a.mrcs", "2@a.mrcs", "3@a.mrcs", "4@a.mrcs"]})
    empty = StarTable({"rlnCoordinateX": np.zeros(0), "rlnCoordinateY": np.zeros(0)})
    write_star(tmp_path / "x.star", {"general": general, "tau": tau, "hot_pixels": empty})
    back = read_star(tmp_path / "x.star")
    assert list(back) == ["general", "tau", "hot_pixels"]
    assert not back["general"].loop and back["general"]["rlnMaskName"][0] == "dir with space/m.mrc"
    assert np.array_equal(back["tau"]["rlnReferenceTau2"], tau["rlnReferenceTau2"])
    assert back["tau"]["rlnSpectralIndex"].dtype.kind == "i"
    assert back["hot_pixels"].labels == ["rlnCoordinateX", "rlnCoordinateY"]
    assert len(back["hot_pixels"]) == 0


def test_emtable_reads_what_we_write(tmp_path):
    from emtable import Table
    optics, parts = read_particles_star(os.path.join(DATA, "relion31.star"))
    write_particles_star(tmp_path / "p.star", optics, parts)
    table = Table(fileName=str(tmp_path / "p.star"), tableName="particles")
    assert len(table) == 5
    assert float(table[2].rlnAngleTilt) == pytest.approx(parts["rlnAngleTilt"][2], abs=1e-12)
    assert Table(fileName=str(tmp_path / "p.star"), tableName="optics")[0].rlnImageSize == 256


def test_star_table_columns():
    t = StarTable({"rlnCoordinateX": [1.0, 2.0], "rlnCoordinateY": [3.0, 4.0]})
    t["rlnClassNumber"] = 1
    t["rlnCoordinateX"] = [5.0, 6.0]
    assert len(t) == 2 and t.labels == ["rlnCoordinateX", "rlnCoordinateY", "rlnClassNumber"]
    assert t.row(1) == {"rlnCoordinateX": 6.0, "rlnCoordinateY": 4.0, "rlnClassNumber": 1}
    assert len(t.take(t["rlnCoordinateX"] > 5.5)) == 1
    with pytest.raises(ValueError):
        t["rlnAngleRot"] = [1.0, 2.0, 3.0]


def test_tracks_round_trip(tmp_path):
    tracks = np.random.default_rng(5).normal(size=(3, 7, 2)) * 4.2
    write_tracks_star(tmp_path / "mic_tracks.star", tracks)
    blocks = read_star(tmp_path / "mic_tracks.star")
    assert list(blocks) == ["general", "0", "1", "2"]
    assert blocks["general"]["rlnParticleNumber"][0] == 3
    assert blocks["1"].labels == ["rlnOriginXAngst", "rlnOriginYAngst"]
    assert np.array_equal(read_tracks_star(tmp_path / "mic_tracks.star"), tracks)


def test_tracks_missing_block(tmp_path):
    write_tracks_star(tmp_path / "t.star", np.zeros((2, 3, 2)))
    text = (tmp_path / "t.star").read_text().replace("data_1", "data_9")
    (tmp_path / "t.star").write_text(text)
    with pytest.raises(InputError, match="t.star: rlnParticleNumber is 2 but block data_1"):
        read_tracks_star(tmp_path / "t.star")


def test_motioncorr_round_trip(tmp_path):
    shifts = np.array([[0.0, 0.0], [1.5, -0.25], [np.nan, np.nan], [3.0, -1.0]])
    general = {"rlnImageSizeX": 64, "rlnImageSizeY": 48, "rlnImageSizeZ": 4,
               "rlnMicrographMovieName": "Movies/a.tif", "rlnMicrographGainName": "gain.mrc",
               "rlnMicrographOriginalPixelSize": 0.83, "rlnMicrographDoseRate": 1.2}
    model = (np.arange(36), np.linspace(-1, 1, 36))
    write_micrograph_metadata(tmp_path / "a.star", general, shifts, model, [[3, 4], [10, 11]])
    meta = read_micrograph_metadata(tmp_path / "a.star")
    assert meta.movie_name == "Movies/a.tif" and meta.gain_name == "gain.mrc"
    assert np.array_equal(meta.shifts, shifts, equal_nan=True)
    assert meta.frames.tolist() == [1, 2, 3, 4] and not meta.dose_is_placeholder
    assert np.array_equal(meta.motion_model[1], model[1])
    assert meta.hot_pixels.tolist() == [[3, 4], [10, 11]]
    optics = StarTable({"rlnOpticsGroup": [1], "rlnMicrographOriginalPixelSize": [0.83]})
    mics = StarTable({"rlnMicrographName": ["MotionCorr/a.mrc"],
                      "rlnMicrographMetadata": [str(tmp_path / "a.star")], "rlnOpticsGroup": [1]})
    write_corrected_micrographs(tmp_path / "corrected_micrographs.star", optics, mics)
    o, m = read_corrected_micrographs(tmp_path / "corrected_micrographs.star")
    assert m["rlnMicrographMetadata"][0] == str(tmp_path / "a.star") and len(o) == 1


def test_motioncor3_quirks(caplog):
    with caplog.at_level(logging.WARNING):
        meta = read_micrograph_metadata(os.path.join(DATA, "motioncor3_quirks.star"))
    assert meta.gain_name is None and meta.dose_is_placeholder
    assert np.isnan(meta.shifts[2]).all() and meta.shifts[3, 0] == -1.48046
    text = caplog.text
    assert "--gain_rot" in text and "-9999" in text and "placeholder" in text


# ------------------------------------------------------------------------------- bad input
def _write(tmp_path, text, name="bad.star"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_and_empty(tmp_path):
    with pytest.raises(InputError, match="none.star: no such file"):
        read_star(tmp_path / "none.star")
    with pytest.raises(InputError, match="bad.star: no data_ blocks"):
        read_star(_write(tmp_path, "# nothing here\n\n"))
    path = _write(tmp_path, "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 1.0\n\n"
                  "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n\n")
    with pytest.raises(InputError, match="bad.star: no particles"):
        read_particles_star(path)


def test_misspelled_label(tmp_path):
    path = _write(tmp_path, "data_particles\nloop_\n_rlnImageName\n_rlnCoordinatX\n1@a.mrcs 3\n")
    with pytest.raises(InputError, match=r"bad.star: unknown label _rlnCoordinatX: did you mean "
                                         r"_rlnCoordinateX\?"):
        read_star(path)


def test_non_relion_label(tmp_path):
    path = _write(tmp_path, "data_\nloop_\n_rlnImageName\n_wrpFoo\n1@a.mrcs 3\n")
    with pytest.raises(InputError, match="bad.star: unknown label _wrpFoo"):
        read_star(path)
    assert read_star(path, strict=False)[""]["wrpFoo"][0] == 3


def test_plausible_new_label_passes(tmp_path):
    path = _write(tmp_path, "data_\nloop_\n_rlnImageName\n_rlnTomoSubtomogramRot\n"
                  "_rlnMicrographShiftZ\n1@a.mrcs 3.5 2\n")
    table = read_star(path)[""]
    assert table["rlnTomoSubtomogramRot"][0] == 3.5


def test_missing_required_label(tmp_path):
    path = _write(tmp_path, "data_optics\nloop_\n_rlnOpticsGroup\n1\n\n"
                  "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@a.mrcs 1\n")
    with pytest.raises(InputError, match="bad.star: block data_optics lacks required label"
                                         r"\(s\) _rlnImagePixelSize"):
        read_particles_star(path)


def test_malformed_rows_and_values(tmp_path):
    with pytest.raises(InputError, match="bad.star: line 5: 1 values for 2 labels"):
        read_star(_write(tmp_path, "data_\nloop_\n_rlnImageName\n_rlnDefocusU\n1@a.mrcs\n"))
    with pytest.raises(InputError, match="label _rlnDefocusU expects numbers, found 'abc'"):
        read_star(_write(tmp_path, "data_\nloop_\n_rlnImageName\n_rlnDefocusU\n1@a.mrcs abc\n"))
    with pytest.raises(InputError, match="optics group"):
        read_particles_star(_write(
            tmp_path, "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 1.0\n\n"
            "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@a.mrcs 2\n"))


def test_read_block(tmp_path):
    optics = read_block(os.path.join(DATA, "relion31.star"), "optics", ("rlnImagePixelSize",))
    assert optics["rlnImagePixelSize"][0] == 2.806
    with pytest.raises(InputError, match=r"relion31.star: no data_micrographs block \(found: "
                                         r"data_optics, data_particles\)"):
        read_block(os.path.join(DATA, "relion31.star"), "micrographs")
