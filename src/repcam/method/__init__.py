"""The paper's method: representative class selection (S), a method's identity and the registries, and the
representative CAM (A + F)."""
