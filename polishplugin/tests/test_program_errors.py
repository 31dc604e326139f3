"""A program's one-line reason for failing reaches $POLISHPLUGIN_ERROR_FILE (what the Scipion
protocols show as their error), for bad input files, refused options and unexpected errors."""
import pytest

from polishplugin.programs import polish
from polishplugin.programs.cli import ERROR_FILE_VAR, run_program


def test_bad_input_is_written(tmp_path, monkeypatch):
    err = tmp_path / "error.txt"
    monkeypatch.setenv(ERROR_FILE_VAR, str(err))
    bad = tmp_path / "sigmas.txt"
    bad.write_text("x y z\n")
    status = polish.main(["--particles", "p.star", "--mics", "m.star", "--half1", "a",
                          "--half2", "b", "--out", str(tmp_path / "out"),
                          "--params-file", str(bad)])
    assert status == 2
    assert err.read_text() == "bad input: %s: cannot read three numbers: could not convert " \
                              "string to float: 'x'\n" % bad


def test_refused_option_and_crash_are_written(tmp_path, monkeypatch):
    err = tmp_path / "error.txt"
    monkeypatch.setenv(ERROR_FILE_VAR, str(err))
    with pytest.raises(SystemExit):
        polish.main(["--particles", "p.star", "--mics", "m.star", "--out", "o"])
    assert err.read_text() == "polish: give --postprocess or both --half1 and --half2\n"

    def crash(args):
        raise RuntimeError("boom\nsecond line")
    with pytest.raises(RuntimeError):
        run_program(lambda: __import__("argparse").ArgumentParser(), crash, [])
    assert err.read_text() == "RuntimeError: boom second line\n"


def test_no_file_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(ERROR_FILE_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        polish.main(["--particles", "p.star", "--mics", "m.star", "--out", "o"])
    assert list(tmp_path.iterdir()) == []
