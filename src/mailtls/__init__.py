"""mailtls: tell people whether their email is exposed to STARTTLS downgrade attacks.

Packages:
- ``protocols``: sans-IO SMTP/IMAP/POP3 cores (bytes and events in, commands out; no sockets).
- ``testcases``: the simulated attacker, one policy object per test case, shared by all protocols.
- ``net``: the only place that does mail I/O (asyncio protocol, TLS engine, listeners, PKI).
- ``store``: the JSONL event journal (the record) and its SQLite index.
- ``runs``: runs, steps, scenarios, binding of connections to runs.
- ``verdicts``: the pure verdict function.
- ``web``: the JSON API and the guided web app.
- ``audit``, ``probe``, ``census``: the admin and researcher tools.
"""

__version__ = "0.1.0"
