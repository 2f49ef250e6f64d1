"""The built-in datasets; importing this package registers them (``emoji``, ``shapes``, ``tuxpaint``).

Each module declares its options as a frozen dataclass and registers a prepare function with
:func:`vislang.data.registry.register_dataset`; the registry itself never imports them.
"""

from vislang.data.datasets import emoji, shapes, tuxpaint

__all__ = ["emoji", "shapes", "tuxpaint"]
