"""STAR paths resolved as RELION writes them: project-relative, file-relative only as a fallback."""
import logging
import os

from polishplugin.io.paths import project_relative, star_path


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


def test_project_relative_from_a_job_folder(tmp_path, monkeypatch):
    """PostProcess/job012/postprocess.star names Refine3D/job010/...: found from the run
    directory (cwd or --root), not from the STAR file's folder."""
    star = tmp_path / "PostProcess" / "job012" / "postprocess.star"
    half = tmp_path / "Refine3D" / "job010" / "run_half1_class001_unfil.mrc"
    _touch(str(star))
    _touch(str(half))
    name = "Refine3D/job010/run_half1_class001_unfil.mrc"
    assert star_path(name, star, str(tmp_path)) == os.path.join(str(tmp_path), name)
    monkeypatch.chdir(tmp_path)
    assert os.path.abspath(star_path(name, "PostProcess/job012/postprocess.star")) == str(half)
    assert star_path(str(half), star) == str(half)


def test_project_path_wins_over_file_relative(tmp_path):
    star = tmp_path / "Job" / "x.star"
    _touch(str(tmp_path / "Job" / "a.mrc"))
    _touch(str(tmp_path / "a.mrc"))
    assert star_path("a.mrc", star, str(tmp_path)) == os.path.join(str(tmp_path), "a.mrc")


def test_file_relative_fallback_logs_once(tmp_path, caplog):
    star = tmp_path / "moved" / "postprocess.star"
    _touch(str(tmp_path / "moved" / "half1.mrc"))
    _touch(str(tmp_path / "moved" / "half2.mrc"))
    project = str(tmp_path / "elsewhere")
    with caplog.at_level(logging.INFO, logger="polishplugin.io.paths"):
        p1 = star_path("half1.mrc", star, project)
        p2 = star_path("half2.mrc", star, project)
    assert p1 == str(tmp_path / "moved" / "half1.mrc") and p2.endswith("moved/half2.mrc")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "relative to the STAR file" in lines[0] and "half1.mrc" in lines[0]


def test_missing_everywhere_names_project_path(tmp_path):
    assert star_path("Refine3D/x.mrc", tmp_path / "a" / "b.star", str(tmp_path)) == \
        os.path.join(str(tmp_path), "Refine3D/x.mrc")


def test_project_relative_writing(tmp_path):
    assert project_relative(tmp_path / "Polish" / "a.mrcs", tmp_path) == "Polish/a.mrcs"
    assert project_relative("/elsewhere/a.mrcs", tmp_path) == "/elsewhere/a.mrcs"
