"""The dynamic batcher: the request queue, admission by expected wait, and the scheduler that
hands batches to replicas. Runs in the front end's event loop; knows replicas only as
:class:`~gre.batching.scheduler.Worker`."""
