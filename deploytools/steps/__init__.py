"""One module per runbook step; each exposes a plain `run(ctx, *, ...) -> result` function."""
