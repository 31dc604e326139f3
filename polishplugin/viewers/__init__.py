"""Every viewer class must be imported here: Scipion discovers them by import."""
from .viewer_simulate import ProtPolishSimulateViewer  # noqa: F401
from .viewer_polish import ProtPolishBayesianViewer  # noqa: F401
from .viewer_bfactors import ProtPolishBFactorsViewer  # noqa: F401
from .viewer_train import ProtPolishTrainViewer  # noqa: F401
from .viewer_refine import ProtPolishRefineViewer  # noqa: F401
