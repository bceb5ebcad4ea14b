"""qgf: test-time Q-gradient guidance (QGF) for flow-matching policies in offline RL."""

__version__ = "0.1.0"
