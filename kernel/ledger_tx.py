"""The ledger's transactions: ``BEGIN IMMEDIATE`` … ``COMMIT`` under its lock."""
from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["Tx"]


class Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` under the ledger's lock."""

    def __init__(self, ledger: Any, durable: bool = True) -> None:
        self.ledger = ledger
        self.durable = durable

    def __enter__(self) -> sqlite3.Connection:
        self.ledger._lock.acquire()
        try:
            if not self.durable:
                self.ledger._db.execute("PRAGMA synchronous=NORMAL")
            self.ledger._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.ledger._lock.release()
            raise
        return self.ledger._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.ledger._db.execute("COMMIT")
            else:
                self.ledger._db.execute("ROLLBACK")
        finally:
            try:
                if not self.durable:
                    self.ledger._db.execute("PRAGMA synchronous=FULL")
            finally:
                self.ledger._lock.release()
