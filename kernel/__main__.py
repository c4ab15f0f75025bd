"""``python -m kernel --state-dir DIR [runkernel options]``: the kernel without Django's setup.

The same ``runkernel`` command (same options, same Kernel, same signal handling), but the
console's apps are never imported: a broken console module, or a console database that is
down, cannot keep a kernel from (re)starting at 2am. docs/operations.md says when to use it.
"""
from __future__ import annotations

import sys

from kernel.management.commands.runkernel import Command


def main(argv: list[str]) -> None:
    cmd = Command()
    parser = cmd.create_parser("python -m kernel", "runkernel")
    options = vars(parser.parse_args(argv))
    if not options.get("state_dir"):
        parser.error("--state-dir is required here (there are no Django settings to default to)")
    cmd.handle(**options)


if __name__ == "__main__":
    main(sys.argv[1:])
