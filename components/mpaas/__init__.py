"""mpaas: a Kubernetes-native mobile backend platform."""

__version__ = "0.1.0"
