"""fusion3d: a probabilistic 3D-CNN spatiotemporal fusion analyzer."""

__version__ = "0.1.0"
