"""Sans-IO protocol cores for SMTP, IMAP and POP3.

A core is a state machine for one connection. The I/O shell (``mailtls.net``) feeds it events
(``Connected``, ``DataReceived``, ``TlsEstablished``, ``TlsFailed``, ``ClientHelloReceived``,
``Timeout``, ``Closed``, ``Kicked``) through ``Core.handle(event)`` and applies the list of commands
it returns, in order (``Record``, ``Send``, ``SendRaw``, ``StartTls``, ``ReadClientHello``,
``SetTimer``, ``Close``). A ``Record`` placed before a ``Send`` is journalled before the reply
leaves. Cores never raise on peer input: garbage becomes a protocol error reply and a
``ProtocolError`` observation.

The lifecycle every core shares (STARTTLS, handshake and ClientHello waits, t2/t4 disruption,
SASL outcome, budgets, timers) is written once in ``flow.AttackFlow``; a core supplies its
wording, its reader and one command table. Attack behaviour is not decided here: the flow asks
the ``TestCase`` policy (``mailtls.testcases``) the same named questions in every protocol. The
rule that an unadvertised STARTTLS is refused belongs to the flow, so no policy can forget it.

Must not import: ``asyncio``, ``socket``, ``ssl`` sockets, ``mailtls.net``, ``mailtls.store``,
``mailtls.web``.
"""
