"""Protocol front ends: SMTP (MX, submission, relay), IMAP, the outbound queue worker.

The protocols layer (docs/architecture.md "Layers"): proxy uses the core, the services and
the runtime; none of them imports proxy, and no protocol imports another one."""
