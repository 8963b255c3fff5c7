"""The core: decides what each action comes to (the optimiser, its guards, the effects they
key on, the per-plan step, the ports it acts through). Imports ``schemas`` and the standard
library only (and ``prometheus_client`` for its metrics); never an AMQP library."""
