"""The room of the tests against one real RabbitMQ (the ``broker`` fixture finds it): each
test collected here is marked ``integration``, so ``-m "not integration"`` leaves it out."""

from tests.support.rooms import marked

pytest_collection_modifyitems = marked(__file__, "integration")
