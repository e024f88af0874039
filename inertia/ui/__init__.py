"""`inertia ui`: a web app to try interventions side by side before committing a sweep.

Pure logic lives in small modules a test can call without a browser (`controls`: widgets from a
plugin's parameters and back to the specs the CLI validates; `schedule`: the guidance schedule a
run will apply; `compare`: a baseline and an intervention run through the normal run path;
`sweep_view`: a finished sweep's runs against their baseline; `media`: what a browser can play and
show; `session`: what the widgets do); `app` is only the Gradio layout. Only the CLI imports this
package; it imports the run path, the registry, scoring and the sweep store, nothing above them.
"""
