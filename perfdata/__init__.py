"""perfdata: produce and serve PeRFception-style datasets.

`import perfdata` stays light: the stages (fit, export, render, pack, download) are imported lazily by the CLI.
"""

__version__ = "0.1.0"
