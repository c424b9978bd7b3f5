"""keel: production habits for the Claude Messages API, on top of the official `anthropic` SDK.

The emulator (`keel.emulator`) lets everything run offline; `keel.testing` is its pytest plugin.
"""

from keel.emulator import Emulator, EmulatorConfig, Scenario, load_scenario

__version__ = "0.1.0"

__all__ = ["Emulator", "EmulatorConfig", "Scenario", "__version__", "load_scenario"]
