"""For the teams that own a subsystem: serve its port to the worker's commands over AMQP."""

from worker.subsystems.server import SubsystemServer

__all__ = ["SubsystemServer"]
