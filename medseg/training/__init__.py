"""The training engine: losses, LR schedules, checkpoints and the loop."""
