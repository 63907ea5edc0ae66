"""One file per algorithm: `Config`, `train(cfg, logger, checkpoint)`, `SMOKE`, `ACTION_SPACES`, `OBSERVATIONS`, and
`VARIANTS` where the file also registers a paper's alternatives under their own names. What files share is in
`algorithms.common`; no algorithm file imports another."""
