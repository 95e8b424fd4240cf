"""Downstream training on perfdata outputs: loaders, 2D/3D models, metrics, trainers."""
