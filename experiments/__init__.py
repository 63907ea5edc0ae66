"""The runner: run specs, run directories, tracking, the `rlgrid` command line (later: grids, tuning)."""
