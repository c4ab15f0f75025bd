"""A logging handler that keeps the kernel's records, with the command-id filter every
kernel handler carries (kernel/log_setup.py), for tests of what a line says and names."""
from __future__ import annotations

import logging

from kernel.log_setup import CommandIdFilter


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(CommandIdFilter())  # as logging_install puts it on every handler
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
