"""A synthetic 2D ball-physics test bed: exact simulator, prompt grammar and pixel-parsing analysis."""
