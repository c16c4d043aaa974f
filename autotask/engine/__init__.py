"""The training engine: one network (or several together) trained from a job, the runtime
it trains under, and the runner that takes results from the cache or trains them."""
