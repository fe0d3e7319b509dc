"""Datasets, transforms and the synthetic benchmark."""
