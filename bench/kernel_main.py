"""``runkernel`` without Django's setup: the same ``Command.handle`` (same arguments, same
Kernel construction, same signal handling), but the project's apps are not loaded.

Used by the benchmarks with ``--launcher direct``: a console module that does not import
(while someone is editing it) must not keep the kernel benchmarks from running. With a
``--state-dir`` given, ``handle`` never reads Django's settings.

    python bench/kernel_main.py --state-dir DIR [runkernel options]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
