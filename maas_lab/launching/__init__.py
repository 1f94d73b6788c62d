"""Training jobs: a launcher plugin's command, run and watched by the core.

``control`` starts, follows, lists and cancels jobs (what ``maas_lab.api`` calls);
``monitor`` is each job's own process; ``rank`` is what every process of a job runs;
``jobs`` is the job's registry row and folder. Code inside a job uses
:mod:`maas_lab.training`.
"""
