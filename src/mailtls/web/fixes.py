"""How to fix it, per common mail app: where its connection-security setting lives.

Summarised in our own words from each app's public documentation (the ``source`` link); menu
names change between versions, so each entry says what to look for as well as where. One entry
per app: the page ``/help/fix`` and the results page's links read this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AppFix:
    anchor: str  # /help/fix#<anchor>
    name: str
    steps: tuple[str, ...]
    source: str  # the app's own documentation
    source_title: str


APPS: tuple[AppFix, ...] = (
    AppFix(
        "thunderbird",
        "Thunderbird (Windows, macOS, Linux)",
        (
            "Open the account's settings (the ≡ menu, Account Settings) and select Server "
            "Settings under the account.",
            "Set Connection security to SSL/TLS (port 993 for IMAP, 995 for POP3). STARTTLS on "
            "port 143 or 110 is the second choice; never None.",
            "For sending, open Outgoing Server (SMTP) at the bottom of the account list, select "
            "the server, press Edit, and set Connection security to SSL/TLS (port 465) or "
            "STARTTLS (port 587).",
            "Restart Thunderbird so that open connections use the new settings.",
        ),
        "https://support.mozilla.org/kb/manual-account-configuration",
        "Mozilla Support: manual account configuration",
    ),
    AppFix(
        "apple-mail",
        "Apple Mail (Mac, iPhone, iPad)",
        (
            "Mac: Mail, Settings, Accounts, select the account, Server Settings. Untick "
            "'Automatically manage connection settings' for incoming and outgoing mail, then "
            "tick 'Use TLS/SSL' for both (ports 993 and 465).",
            "iPhone and iPad: Settings, Apps, Mail, Mail Accounts, the account, Account, "
            "Advanced: switch 'Use SSL' on. Then, under the account, Outgoing Mail Server, "
            "the primary server: switch 'Use SSL' on.",
            "If you set up the account with our configuration profile, delete the profile "
            "afterwards (Settings, General, VPN & Device Management).",
        ),
        "https://support.apple.com/guide/mail/server-settings-mlhlp1079/mac",
        "Apple Mail User Guide: server settings",
    ),
    AppFix(
        "outlook",
        "Outlook (Windows)",
        (
            "Classic Outlook: File, Account Settings, Account Settings, select the account, "
            "Change, More Settings, Advanced.",
            "Incoming server: port 993 (IMAP) or 995 (POP3) with encrypted connection SSL/TLS. "
            "Outgoing server: port 465 with SSL/TLS, or 587 with STARTTLS. 'None' or 'Auto' "
            "lets an attacker choose for you.",
            "New Outlook: Settings, Accounts, select the account, Manage, and check the same "
            "ports and encryption in the account's server settings (re-add the account with "
            "the advanced setup if they cannot be changed).",
        ),
        "https://support.microsoft.com/office/pop-imap-and-smtp-settings-8361e398-8af4-4e97-b147-6c6c4ac95353",
        "Microsoft Support: POP, IMAP and SMTP settings",
    ),
    AppFix(
        "android",
        "K-9 Mail and Thunderbird for Android",
        (
            "Open Settings, select the account, then Fetching mail (or Receiving), Incoming "
            "server.",
            "Set Security to SSL/TLS (port 993 for IMAP, 995 for POP3); STARTTLS is the second "
            "choice; never None.",
            "Then Sending mail, Outgoing server: Security SSL/TLS (port 465) or STARTTLS "
            "(port 587).",
        ),
        "https://support.mozilla.org/products/thunderbird-android",
        "Thunderbird for Android (formerly K-9 Mail) support",
    ),
    AppFix(
        "mutt",
        "mutt and neomutt",
        (
            "Use URLs that start encrypted: set folder='imaps://imap.example.org/' (or pops://) "
            "and set smtp_url='smtps://you@smtp.example.org/'.",
            "For servers that only offer STARTTLS, add set ssl_starttls=yes.",
            "Always add set ssl_force_tls=yes: with it, mutt refuses any connection that is "
            "not encrypted instead of falling back.",
        ),
        "http://www.mutt.org/doc/manual/#ssl-force-tls",
        "The Mutt manual: ssl_force_tls",
    ),
)
