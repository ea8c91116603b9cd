"""All configuration dataclasses, with their defaults, in one place.

Each pipeline stage reads its settings from one dataclass here; command-line
flags override fields. Keep defaults here, not as constants in the modules.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TednConfig:
    """TEDn evaluation settings."""

    flavor: str = "lmx"  # "lmx" prunes what LMX cannot express; "full" compares everything
