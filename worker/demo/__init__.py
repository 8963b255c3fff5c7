"""The demos: the whole loop in one process (simulated subsystems), and against a broker."""
