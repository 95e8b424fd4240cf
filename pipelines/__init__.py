"""The stages: download, fit, export (and import), render, pack."""
