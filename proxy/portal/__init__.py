"""The professionals' portal: one HTTPS listener of the node (aiohttp.web, jinja2 templates,
no JavaScript) serving OIDC login, app passwords, access history, client settings, and
Thunderbird autoconfig / Outlook autodiscover (docs/portal.md)."""
