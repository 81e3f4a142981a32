"""Prediction: sliding-window inference and the run-folder predictor."""
