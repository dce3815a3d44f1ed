"""Training utilities shared by the paper scripts: checkpoints, resume, logs, schedules, plots."""
