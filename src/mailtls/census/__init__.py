"""``mailtls census``: how many Internet mail services advertise plaintext auth (Shodan counts).

Flow, one way: ``profiles`` (versioned query sets, pure data) -> ``runner`` (sends each query
through ``client``, the only module that talks to Shodan) -> ``model`` (raw counts, shares and
facet arithmetic, pure) -> ``history`` (saved runs under ``<data dir>/census/``) -> ``render``
(rich table, JSON, CSV) and ``plot`` (matplotlib, Agg) -> ``cli`` (flags, key, exit codes).

The API key travels in Shodan's query string; ``client`` keeps it out of messages, exception
text, HTTP-library debug logs and saved files. This package imports nothing from the self-test
service (protocols, net, store, web); it shares only ``termsafe`` and the CLI dispatcher.
"""
