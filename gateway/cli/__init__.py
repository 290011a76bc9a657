"""The ``gateway`` command line (SPEC §8): one module per command group, over the composition root."""
