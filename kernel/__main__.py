"""``python -m kernel --state-dir DIR [runkernel options]``: the kernel without Django's setup.

The same options, Kernel and signal handling as ``manage.py runkernel`` (both are thin over
kernel/cli.py), but the console's apps are never imported: a broken console module, or a
console database that is down, cannot keep a kernel from (re)starting at 2am.
docs/operations.md says when to use it.
"""
from __future__ import annotations

import sys

from kernel.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
