"""`dime-offline data ...` commands (inspect, convert)."""
