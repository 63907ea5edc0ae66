"""The runner: the algorithm registry, run specs and run directories, executors, suites and grids, W&B tracking,
Optuna tuning and the `rlgrid` command line. The one package that imports all the others."""
