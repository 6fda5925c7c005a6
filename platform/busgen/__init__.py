"""BUSGen Platform: a generative foundation model for breast ultrasound, on Ray.

Stage modules import each other explicitly (``from busgen import data``); this
package file stays import-light so that ``import busgen`` is cheap for the CLI
and for Ray workers.
"""

__version__ = "0.1.0"
