"""The I/O shell of the mail servers: the only place that does mail I/O (sockets and TLS).

Flow: ``listeners.MailServer`` accepts a connection, binds it to a run step (``binder``), picks
the test case's policy and creates a ``connection.MailConnection`` that drives one sans-IO
protocol core: socket bytes become core events, and ``MailConnection.apply`` turns the core's
commands into writes (inside TLS or raw), TLS handshakes (``tlsengine``: ``ssl.SSLObject`` on
memory BIOs), T2 ClientHello reads (``protocols.tlsrecord``), timers, closes and resets, and
journal records (the ``sink``: the records of one read are handed to it, with one
``append_many`` call when the sink is a bound ``append`` whose object has one, before the
read's replies are written).
``pki`` creates the test CA and server certificate; ``limits`` admits connections and keeps
the per-address budget; ``recording`` records connections bound to no run compactly and keeps
each connection's budget; ``endpoints`` opens and closes the runs' own listening sockets (served
by the same listeners); ``dns`` is the test zone's UDP/TCP responder loop (the answers come in as
a callable).

Must not import: ``mailtls.web``, ``mailtls.store``, ``mailtls.runs`` (except its shared types,
the pure ``runs.endpoints`` records and ``runs.binding.address_key``, so that limits and bindings
key an address alike)
or the protocol cores (``smtp``/``imap``/``pop3``): they come in as callables.
"""
