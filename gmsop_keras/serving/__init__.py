"""Serving: export to the TF Serving layout, and loading saved models for evaluation and prediction."""
