"""End to end: real `fleet` processes against `fleet sim` (or a real control plane); all marked slow."""
