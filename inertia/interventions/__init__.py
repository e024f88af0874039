"""Built-in intervention plugins."""
