"""Protocol front ends (SMTP now, IMAP next). Imports flow one way: proxy uses the other
packages; none of them imports proxy."""
