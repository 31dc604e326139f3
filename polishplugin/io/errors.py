"""The one exception raised by :mod:`polishplugin.io` for bad input files."""
import os


class InputError(ValueError):
    """Bad input file: the message always starts with the file name, then the problem."""

    def __init__(self, path, problem):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__("%s: %s" % (self.path, problem))
