"""repcam: class activation maps by representative class selection and multi-layer Grad-CAM fusion."""

__version__ = "0.1.0"
