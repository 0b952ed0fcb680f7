"""Energy of a compiled network on the accelerator: counted events times cited
per-event energies (docs/energy.md)."""
