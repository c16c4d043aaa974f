"""Figures (data first, drawing second), the HTML report and publishing to optuna-dashboard."""
