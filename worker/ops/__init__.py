"""The commands for people: publish a plan, follow the records, status, review, pause and
resume, breakers, broker definitions. A tool never runs the worker's plan handling."""
