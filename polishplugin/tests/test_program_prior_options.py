"""refine and external_reconstruct share their prior options (programs/cli.py,
add_prior_arguments): each refuses the same bad values, before reading any input, and both
complete the per-denoiser defaults the same way (check_prior_arguments)."""
import argparse

import pytest

from polishplugin.core.refine.confidence import THRESHOLDS, cw_red_lambda
from polishplugin.core.refine.denoisers import UNET_TTA
from polishplugin.programs import external_reconstruct, refine
from polishplugin.programs.cli import add_prior_arguments, check_prior_arguments

BAD = {"tv weight 0": ["--tv-weight", "0"],
       "negative tv weight": ["--tv-weight", "-0.1"],
       "lambda above 1": ["--mode", "red", "--lambda", "2"],
       "lambda below 0, even in cw-red": ["--mode", "cw-red", "--lambda", "-0.5"],
       "lambda nan": ["--lambda", "nan"],
       "cw-low 0": ["--cw-low", "0"],
       "cw-high infinite": ["--cw-high", "inf"],
       "cw-high coarser than cw-low": ["--cw-low", "5", "--cw-high", "8"],
       "cw-high equal to cw-low": ["--cw-low", "6", "--cw-high", "6"],
       "unknown cw-shells": ["--cw-shells", "some"],
       "unknown denoiser": ["--mode", "red", "--denoiser", "bm4d"],
       "unknown mode": ["--mode", "map"],
       "weights for tv": ["--mode", "red", "--denoiser", "tv", "--unet-weights", "w.npz"],
       "tta for tv": ["--mode", "red", "--denoiser", "tv", "--unet-tta", "8"],
       "tta not a cube group order": ["--mode", "red", "--denoiser", "unet", "--unet-tta", "6"],
       "precision for tv": ["--mode", "red", "--denoiser", "tv", "--unet-precision", "bfloat16"],
       "unknown precision": ["--mode", "red", "--denoiser", "unet", "--unet-precision", "fp16"]}


def _refine(tmp_path, extra):
    return refine.main(["--particles", str(tmp_path / "none.star"), "--ref",
                        str(tmp_path / "none.mrc"), "--out", str(tmp_path / "out")] + extra)


def _hook(tmp_path, extra):
    return external_reconstruct.main(extra + [str(tmp_path / "none.star")])


@pytest.mark.parametrize("extra", list(BAD.values()), ids=list(BAD))
@pytest.mark.parametrize("program", [_refine, _hook], ids=["refine", "external_reconstruct"])
def test_bad_prior_options_are_refused_before_any_input_is_read(program, extra, tmp_path,
                                                                monkeypatch):
    """A refused option ends the program (SystemExit with a non-zero status or a message) and
    names the option in $POLISHPLUGIN_ERROR_FILE; the inputs (which do not exist) are never
    read, so the refusal is the options' own."""
    err = tmp_path / "error.txt"
    monkeypatch.setenv("POLISHPLUGIN_ERROR_FILE", str(err))
    with pytest.raises(SystemExit) as exc:
        program(tmp_path, extra)
    assert exc.value.code not in (0, None)
    assert "none.star" not in err.read_text()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("program", [_refine, _hook], ids=["refine", "external_reconstruct"])
def test_missing_weights_file_is_bad_input(program, tmp_path, monkeypatch):
    err = tmp_path / "error.txt"
    monkeypatch.setenv("POLISHPLUGIN_ERROR_FILE", str(err))
    assert program(tmp_path, ["--mode", "cw-red", "--denoiser", "unet", "--unet-weights",
                              str(tmp_path / "w.npz")]) == 2
    assert "no such U-Net weights file" in err.read_text()


@pytest.mark.parametrize("program", [_refine, _hook], ids=["refine", "external_reconstruct"])
def test_good_prior_options_pass_to_the_inputs(program, tmp_path, monkeypatch):
    """The edge values accepted by both: the same run then stops at the missing STAR."""
    err = tmp_path / "error.txt"
    monkeypatch.setenv("POLISHPLUGIN_ERROR_FILE", str(err))
    assert program(tmp_path, ["--mode", "red", "--lambda", "0", "--cw-low", "12",
                              "--cw-high", "3", "--cw-shells", "final", "--tv-weight", "0.05"]) == 2
    assert "none.star" in err.read_text()


def _prior(argv):
    """The prior options as the programs parse and complete them."""
    p = argparse.ArgumentParser()
    add_prior_arguments(p)
    args = p.parse_args(argv)
    check_prior_arguments(args, "test")
    return args


def test_programs_take_the_denoisers_thresholds_unless_given():
    args = _prior(["--mode", "cw-red", "--denoiser", "unet"])
    assert (args.cw_low, args.cw_high) == THRESHOLDS["unet"]
    args = _prior(["--mode", "cw-red", "--denoiser", "tv"])
    assert (args.cw_low, args.cw_high) == (10.0, 4.5)
    args = _prior(["--mode", "cw-red", "--denoiser", "unet", "--cw-low", "10", "--cw-high", "4.5"])
    assert (args.cw_low, args.cw_high) == (10.0, 4.5)               # the paper's, selectable
    low, high = THRESHOLDS["unet"]
    assert cw_red_lambda(low, low, high) == 0.0 and cw_red_lambda(high, low, high) == 1.0


def test_unet_tta_defaults_to_the_flip_average_for_the_unet_only():
    assert UNET_TTA == 8
    assert _prior(["--mode", "cw-red", "--denoiser", "unet"]).unet_tta == UNET_TTA
    assert _prior(["--mode", "cw-red", "--denoiser", "unet", "--unet-tta", "1"]).unet_tta == 1
    assert _prior(["--mode", "cw-red", "--denoiser", "tv"]).unet_tta is None


def test_unet_precision_auto_is_resolved_for_the_unet_only(monkeypatch):
    from polishplugin.core.refine import unet
    monkeypatch.setattr(unet, "native_bfloat16", lambda: False)
    assert _prior(["--mode", "cw-red", "--denoiser", "unet"]).unet_precision == "float32"
    monkeypatch.setattr(unet, "native_bfloat16", lambda: True)
    assert _prior(["--mode", "cw-red", "--denoiser", "unet"]).unet_precision == "bfloat16"
    assert _prior(["--mode", "cw-red", "--denoiser", "unet", "--unet-precision",
                   "float32"]).unet_precision == "float32"
    assert _prior(["--mode", "cw-red", "--denoiser", "tv"]).unet_precision is None
