"""Metrics, evaluation of runs and plots."""
