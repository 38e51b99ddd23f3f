"""streamsrv: an on-demand audio streaming daemon built on Twisted.

The package holds the parts (web layer, streaming core, health, audio helpers);
``streamsrv.tap`` is the only place that wires them together.
"""

__version__ = "0.2.0"
