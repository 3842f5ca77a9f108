"""Study-1 style entry point to xaitf's settings: ``from settings import IG`` works from the repo root.

The values live in ``xaitf/settings.py`` (one dict per method plus GLOBAL); edit them there, or
override them per run with ``--set section.key=value`` on any command line of the package.
"""
from xaitf.settings import *  # noqa: F401,F403
from xaitf.settings import SECTIONS, apply_overrides, parse_override, section  # noqa: F401
