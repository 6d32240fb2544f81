"""Backend implementations of :class:`core.backend.Backend`."""
