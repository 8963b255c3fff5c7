"""The relays the worker is measured against, each run as a process of its own."""
