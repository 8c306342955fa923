"""The paper's method: representative class selection (S), a method's identity and the registries, and the
representative CAM (A + F)."""

# Registers the selection methods that live in their own file (method/selections/): they must be known before any
# config is validated or any table is ordered, and every such reader imports this package first.
from repcam.method import selections as _selections  # noqa: F401
