"""Runs: a user's self-test, its steps, the binding of connections to steps, and its verdicts.

What flows through it: the web app (or ``mailtls run``) creates a run and starts, extends, reports,
skips and finishes its steps through :class:`~mailtls.runs.manager.RunManager`; the I/O shell asks
``binder(client_ip, local)`` at accept time which run/step/test case a connection gets, and
``authenticate(credential)`` who may log in (the run's username with the run's password: only
that is evidence); the store hands every appended event to ``on_record`` (two_phase activation,
login-address binding, binding mismatches, misuses of a run's username). Every change of a
run is journalled as a run record (``run_created``, ``step_started``, ...) and the whole state is
rebuilt from those records on restart (``RunManager.load``).

Modules: ``model`` (Run, Step, plans, errors), ``codes`` (session codes, account names, keyed
username hashes), ``keys`` (the server's secret key and HMAC derivations), ``proof`` (whether a
credential is a run's password, constant-time), ``binding`` (the address binding table),
``endpoints`` (the runs' own ports or addresses: the pool, folded from run records),
``manager`` (the run manager), ``types`` (the Binding given to the shell).
The verdict function lives in ``mailtls.verdicts`` (pure).

This package must not import ``mailtls.net`` or ``mailtls.web``; it talks to the store only through
the small interface it is given (append, subscribe, query, delete_run).
"""
