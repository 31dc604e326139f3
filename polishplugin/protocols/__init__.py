"""Every protocol class must be imported here: Scipion discovers them by import."""
from .protocol_base import ProtPolishBase, ProtPolishMovieBase  # noqa: F401
from .protocol_simulate import ProtPolishSimulate  # noqa: F401
from .protocol_import import ProtPolishImportMovies  # noqa: F401
from .protocol_polish import ProtPolishBayesian  # noqa: F401
from .protocol_polish_stream import ProtPolishStreaming  # noqa: F401
from .protocol_bfactors import ProtPolishBFactors  # noqa: F401
from .protocol_train import ProtPolishTrain  # noqa: F401
from .protocol_refine import ProtPolishRefine  # noqa: F401
