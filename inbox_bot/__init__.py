"""inbox-bot: runs a SaaS's account-deletion process from its support mailbox."""

__version__ = "0.1.0"
