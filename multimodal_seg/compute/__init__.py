"""Where the work runs: Dask's schedulers (threads, a LocalCluster, a running scheduler,
SLURM/PBS through dask-jobqueue) and running independent tasks on the current one.

Nothing here schedules, queues or sends work itself: Dask does (see docs/scale.md).
"""
