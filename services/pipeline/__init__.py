"""`unast compress`: the whole method as one command, driving the three services over REST exactly as
a team's deployment tooling would.

- budgets.py: budgets as fractions of the teacher or in units (30ms, 2GiB, 60M params).
- configs.py: the quick and the quality configurations (steps, pools, sizes).
- record.py: the run directory's record (run.json): each stage's inputs, ids and results, so that a
  run started again redoes only what changed.
- stack.py: the services to drive: a running stack, or an embedded one started for the run.
- progress.py: a bar per stage on a terminal, plain lines otherwise.
- stages.py: the stages, each a function of the services and the record.
- baselines.py: depth pruning, UNAST-depth and uniform shrinking, beside full UNAST.
- report.py: report.md and its figures.
- compress.py: the command, stage after stage.
"""
