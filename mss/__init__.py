"""mss: a secure health messaging node (MSSanté-style trust space)."""

__version__ = "0.1.0"
