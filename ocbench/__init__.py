"""ocbench: reproduce "Stabilizing GANs with Octave Convolutions" (Durall, Pfreundt, Keuper)."""

__version__ = "0.1.0"
