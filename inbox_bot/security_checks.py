"""Start-up checks of the configuration that are advice, not errors (threats row 20).

"Ticket Trick" in reverse (GitLab #30366): when reply-token addresses (``support+TOKEN@domain``) live on
the corporate domain, third-party services that trust "anyone @domain" can be made to send mail to a
token address, which an attacker may read back through the bot's thread. A dedicated reply subdomain
(``reply.clickport.io``) with no catch-all avoids it. The bot cannot see DNS or the company's SSO, so this
is a warning at daemon start, not a refusal.
"""

from __future__ import annotations

from inbox_bot.config import Config


def config_warnings(cfg: Config) -> list[str]:
    """Warnings about ``cfg``; the corporate domain is taken from the staff and app-sender addresses."""
    reply_domain = cfg.mailbox_domain.lower()
    corporate = {a.rpartition("@")[2].lower() for a in (cfg.staff_address, cfg.app_sender)}
    if reply_domain in corporate:
        return [f"mailbox.address: the reply domain {reply_domain} is the corporate domain (that of "
                "mailbox.staff_address / intake.app_sender); use a dedicated reply subdomain such as "
                f"reply.{reply_domain} with no catch-all (threats row 20, 'Ticket Trick')"]
    return []
