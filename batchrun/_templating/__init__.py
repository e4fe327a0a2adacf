"""Prompt templates: ``{column}`` text templates, Jinja in a sandbox, and the watch that
bounds one row's rendering time. Below the settings (their checks parse templates) and
above only the base values."""
