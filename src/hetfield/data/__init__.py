"""The particle table, preprocessing into a memory-mapped cache, batching, and the simulator."""
