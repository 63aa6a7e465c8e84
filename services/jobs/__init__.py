"""The job runtime: every long job of every service runs on it (trainer jobs, profiler builds).

- tables.py: the columns a service's job, log-line and artifact tables share (each service owns its
  own tables and migrations).
- queue.py: what the API and the workers do to job rows: submit, cancel, claim, heartbeat, finish,
  release, recover the lost.
- kind.py: a job kind, declared once: its spec, its input checks, its runner and its typed result.
- context.py: the `JobContext` protocol a runner is handed, and its two implementations: queued (the
  worker's, on the database) and local (a folder, alone or under torchrun).
- worker.py: the loop that claims jobs and runs them, with a heartbeat.
- routes.py: the one face of every service's jobs on its API (list, get, cancel, log, result).
- checkpoint.py: checkpoints and outputs as safetensors + JSON, written atomically.
"""
