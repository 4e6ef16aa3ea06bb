"""``python -m funnelscope.cli``."""

from funnelscope.cli import app

app()
