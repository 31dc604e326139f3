"""Scipion discovers the plugin, its protocols and viewers, and its citations parse."""
import pytest


def test_plugin_discovered_with_protocols_and_viewers():
    from pwem import Domain
    assert "polishplugin" in Domain.getPlugins()
    protocols = Domain.getProtocols()
    assert "ProtPolishSimulate" in protocols and "ProtPolishBayesian" in protocols
    assert "ProtPolishBase" in protocols  # discoverable, but hidden from the GUI (no _label)
    assert "_label" not in protocols["ProtPolishBase"].__dict__
    assert {"ProtPolishSimulateViewer", "ProtPolishBayesianViewer"} <= set(Domain.getViewers())


def test_plugin_variables_and_citations(monkeypatch):
    import polishplugin
    from polishplugin import Plugin
    from polishplugin.constants import BACKEND_VAR, OPENCL_DEVICE_VAR
    assert Plugin.getBackend() == "numba"
    assert Plugin.validateInstallation() == []
    env = Plugin.getEnviron()
    assert env[BACKEND_VAR] == "numba"
    monkeypatch.setitem(Plugin._vars, BACKEND_VAR, "auto")
    monkeypatch.setitem(Plugin._vars, OPENCL_DEVICE_VAR, "0:0")
    env = Plugin.getEnviron()       # what the programs read (backends.get_backend, opencl)
    assert env[BACKEND_VAR] == "auto" and env[OPENCL_DEVICE_VAR] == "0:0"
    monkeypatch.setitem(Plugin._vars, BACKEND_VAR, "cuda")
    with pytest.raises(ValueError, match="cuda"):
        Plugin.getBackend()
    from pyworkflow.utils import parseBibTex
    refs = parseBibTex(__import__("polishplugin.bibtex", fromlist=["x"]).__doc__)
    for key in ("Zivanov2019", "Kimanius2021", "Scheres2012", "Scheres2014", "Grant2015",
                "Romano2017"):
        assert key in refs and refs[key]["doi"].startswith("http")
    assert polishplugin._references == ["Zivanov2019"]


def test_logo_and_every_protocols_citations_resolve():
    """The logo Scipion shows is shipped, and each protocol cites keys of bibtex.py."""
    import os
    import matplotlib.image
    import polishplugin
    from pwem import Domain
    from pyworkflow.utils import parseBibTex
    logo = os.path.join(os.path.dirname(polishplugin.__file__), polishplugin._logo)
    assert matplotlib.image.imread(logo).shape[:2] == (128, 128)
    refs = parseBibTex(__import__("polishplugin.bibtex", fromlist=["x"]).__doc__)
    protocols = Domain.getProtocols()
    for name in ("ProtPolishSimulate", "ProtPolishImportMovies", "ProtPolishTrain",
                 "ProtPolishBayesian", "ProtPolishStreaming", "ProtPolishBFactors",
                 "ProtPolishRefine"):
        keys = protocols[name]()._citations()
        assert keys and set(keys) <= set(refs), name
    # Nelder-Mead is cited for TCC training only (the default evidence method has no simplex)
    assert "Nelder1965" in protocols["ProtPolishTrain"](method=1)._citations()
    assert "Nelder1965" not in protocols["ProtPolishTrain"]()._citations()


def test_streaming_protocol_is_seen_as_streaming():
    """pyworkflow schedules a protocol on open inputs only when it works in streaming."""
    from polishplugin.protocols import ProtPolishBayesian, ProtPolishStreaming
    assert ProtPolishStreaming.worksInStreaming()
    assert not ProtPolishBayesian.worksInStreaming()
    from pyworkflow.protocol import STEPS_PARALLEL
    assert ProtPolishStreaming().stepsExecutionMode == STEPS_PARALLEL
