"""One file per algorithm; each exposes `Config`, `train(cfg, logger, checkpoint)` and `SMOKE` settings."""
