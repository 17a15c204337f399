"""Hydra configs, packaged into the wheel as tokenize_mm/conf."""
