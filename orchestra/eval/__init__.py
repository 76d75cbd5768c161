"""Evaluation: policies under preference vectors, reports and plots."""
