"""Figures as plain matplotlib Figures, with no Scipion or GUI import: ``plots`` draws arrays,
``jobs`` the figure sets of each program's output folder. The programs draw them headless (Agg,
:func:`polishplugin.programs.cli.job_figures`); the Scipion viewers show the same figures."""
