"""The worker process over RabbitMQ: the only room that imports aio-pika, aiormq, pamqp and
tenacity. It reads deliveries, fences, publishes records and settles; the core decides."""
