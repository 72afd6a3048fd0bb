"""The deterministic interleaving simulator behind :mod:`objstore.testing.simulate`."""
