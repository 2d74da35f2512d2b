"""The naive peer: Starlette + Uvicorn, one forward per request, no batching."""
