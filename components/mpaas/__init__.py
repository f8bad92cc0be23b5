"""mpaas: a Kubernetes-native mobile backend platform."""

from .compiled import guard as _guard_compiled

__version__ = "0.1.0"

_guard_compiled()  # before any hot-path module is imported (mpaas.compiled)
