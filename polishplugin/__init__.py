"""polishplugin: reference-based Bayesian particle polishing (Zivanov et al. 2019) and
denoiser-regularised refinement (Kimanius et al. 2021) for Scipion.

The science lives in ``core`` (numpy arrays in, numpy arrays out), files in ``io``,
command-line programs in ``programs``; ``protocols`` and ``viewers`` are thin Scipion
layers over those programs.
"""
__version__ = "0.1.0"
_logo = "polishplugin_logo.png"
_references = ["Zivanov2019"]


def __getattr__(name):
    """Load the Scipion ``Plugin`` class on first use only, so that programs and core work
    without Scipion and pyworkflow is not imported before its environment is set."""
    if name == "Plugin":
        from .plugin import Plugin
        return Plugin
    raise AttributeError("module 'polishplugin' has no attribute %r" % name)
