"""Replica processes: where they run (GPU discovery, the plan), the worker process itself, the
wire between it and the front end, the front end's handle on one, and the pool that keeps
every slot filled."""
