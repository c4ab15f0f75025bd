"""What the tests and the benchmarks share to drive real kernels from outside.

- ``checkout``: where the repository is, and the interpreter that runs it;
- ``waiting``: ``wait_until``, the one poll-until-true loop (it never hides a predicate's bug);
- ``ports``: free loopback ports;
- ``processes``: background processes in their own session, their environment, their end;
- ``kernel_process``: ``KernelProcess``, the one launcher of a real ``runkernel``;
- ``console_process``: ``ConsoleProcess``, the one launcher of a real console (manage.py,
  gunicorn or runserver, its JSON API);
- ``status_reader``: status.json and control.json of a state dir;
- ``ledger_reader``: the ledger (and the paper exchange's book) with read-only sqlite3;
- ``slot_seeds``: slots written into a state dir before its kernel first starts;
- ``strategy_sources`` / ``strategy_folders``: the strategies tests write, and the folders
  they write them into; ``alpha_sources``: the version tests' two-module strategy and its
  broken variants.

``bench/`` imports these too (``python -m bench.<name>`` from the checkout's root).
"""
