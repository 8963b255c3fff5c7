"""The room of the slow tests that start broker nodes of their own (a cluster, a TLS node) or
run for minutes (the soak, the bench): each test collected here is marked ``integration``
and ``slow``."""

from tests.support.rooms import marked

pytest_collection_modifyitems = marked(__file__, "integration", "slow")
