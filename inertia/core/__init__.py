"""Shared mechanics: configuration, the sampling loop, interfaces, video I/O and run records."""
