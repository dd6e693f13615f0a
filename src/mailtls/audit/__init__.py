"""``mailtls audit``: which Postfix/Dovecot settings let credentials or mail travel without TLS.

Data flows one way:

``sources`` (read files, run ``postconf``/``doveconf``: the only I/O) -> parsers
(``postfix_main``, ``postfix_master``, ``dovecot``: text in, typed definitions with file:line out)
-> ``effective`` / ``dovecot_effective`` (per-service effective values: defaults, main.cf,
master.cf ``-o`` overrides, Dovecot protocol/local/remote filters) -> checks (``checks_postfix``,
``checks_dovecot``: registries of pure functions, effective view in, ``Finding`` out; each check
names an exposure and ``severity`` alone turns exposure and reach into the severity) ->
``report`` (JSON extras) and ``mailtls.findings`` (text/JSON/SARIF) -> ``cli``.

Rules: only ``sources`` touches the file system or runs subprocesses; parsers, effective views,
``networks``, ``severity`` and checks are pure and never import ``sources`` or ``cli``. Nothing
here imports the mail servers, the web app or the prober. Secrets are never read:
``ssl_key = </path`` stays a path, and only TLS/auth-relevant settings are ever shown.
"""
