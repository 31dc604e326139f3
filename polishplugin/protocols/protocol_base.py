"""What every polishplugin protocol shares: running one of our programs through ``runJob`` (so
Scipion's MPI and queue submission apply) with the plugin's environment."""
from pwem.protocols import EMProtocol

from .. import Plugin


class ProtPolishBase(EMProtocol):
    """Base class (no ``_label``: hidden from the GUI)."""

    def runProgram(self, program, args, numberOfMpi=1, numberOfThreads=1):
        """Run ``python -m polishplugin.programs.<program> <args>`` in the run folder."""
        self.runJob(Plugin.getPython(), "-m polishplugin.programs.%s %s" % (program, args),
                    env=Plugin.getEnviron(), numberOfMpi=numberOfMpi,
                    numberOfThreads=numberOfThreads)
