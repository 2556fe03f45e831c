"""`python -m uptrain.config` prints docs/config.md."""

from uptrain.config.reference import config_reference_markdown

print(config_reference_markdown(), end="")
