"""Built-in backbone plugins."""
