"""Scipion's queue submission with the SLURM hosts.conf of the README
(polishplugin/config/hosts_slurm.conf): the sbatch script pyworkflow writes for a polishing run
with 4 MPI ranks x 2 threads, the command that submits it, and the MPI command runJob builds for
our program inside the job."""
import os
import stat

from pyworkflow.protocol.hosts import HostConfig
from pyworkflow.tests import BaseTest, setupTestProject

import polishplugin
from polishplugin.protocols import ProtPolishBayesian

CONF = os.path.join(os.path.dirname(polishplugin.__file__), "config", "hosts_slurm.conf")
README = os.path.join(os.path.dirname(os.path.dirname(polishplugin.__file__)), "README.md")


class TestSlurmSubmission(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def test_readme_shows_the_tested_hosts_conf(self):
        if not os.path.exists(README):
            self.skipTest("README.md not beside the package (installed, not a checkout)")
        with open(README) as fh, open(CONF) as conf:
            self.assertIn(conf.read(), fh.read())

    def test_sbatch_script_and_mpi_command(self):
        import importlib
        launch = importlib.import_module("pyworkflow.protocol.launch")
        from pyworkflow.utils.process import buildRunCommand
        from polishplugin import Plugin
        host = HostConfig.load(CONF)["localhost"]
        prot = self.newProtocol(ProtPolishBayesian, numberOfMpi=4, numberOfThreads=2)
        self.proj.saveProtocol(prot)
        os.makedirs(prot._getLogsPath(), exist_ok=True)  # made by a real launch
        prot.setHostConfig(host)
        prot._useQueue.set(True)
        prot.setQueueParams(["cpu", {"JOB_MEMORY": "32000", "JOB_TIME": "12",
                                     "QUEUE_FOR_JOBS": "N"}])
        self.assertTrue(prot.useQueueForProtocol())  # the whole protocol runs in one job
        submit = dict(host.getQueuesDefault())
        submit.update(prot.getSubmitDict())
        submit["JOB_COMMAND"] = "python pw_protocol_run.py PROJECT DB %s" % prot.strId()

        # a stand-in sbatch that records its arguments and answers as SLURM does
        bindir = os.path.abspath(self.proj.getTmpPath("bin"))
        os.makedirs(bindir, exist_ok=True)
        calls = os.path.join(bindir, "calls.txt")
        sbatch = os.path.join(bindir, "sbatch")
        with open(sbatch, "w") as fh:
            fh.write('#!/bin/sh\necho "$@" >> %s\necho "Submitted batch job 4321"\n' % calls)
        os.chmod(sbatch, os.stat(sbatch).st_mode | stat.S_IEXEC)
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"])
        job, error = launch._submit(host, submit, env=env)

        self.assertEqual((job, error), (4321, None))
        script_path = submit["JOB_SCRIPT"]
        self.assertTrue(script_path.endswith("scipion%s.job" % prot.strId()))
        with open(calls) as fh:
            self.assertEqual(fh.read().split(), [script_path])
        logs = submit["JOB_LOGS"]
        with open(script_path) as fh:
            script = fh.read()
        self.assertEqual(script.strip().splitlines(), [
            "#!/bin/bash",
            "#SBATCH --job-name=scipion%s" % prot.strId(),
            "#SBATCH --partition=cpu",
            "#SBATCH --output=%s.out" % logs,
            "#SBATCH --error=%s.err" % logs,
            "#SBATCH --ntasks=4",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --mem=32000",
            "#SBATCH --time=12:00:00",
            "export OMP_NUM_THREADS=2",
            submit["JOB_COMMAND"]])

        # inside the job, runJob starts our program under the host's PARALLEL_COMMAND
        python = Plugin.getPython()
        cmd = buildRunCommand(python, "-m polishplugin.programs.polish --threads 2", 4, host,
                              Plugin.getEnviron())
        self.assertEqual(cmd.split(), ["mpirun", "-np", "4", python, "-m",
                                       "polishplugin.programs.polish", "--threads", "2"])
