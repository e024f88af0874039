"""An example inertia plugin package (see docs/plugins.md): `example_focus` and `example_brightness`."""
