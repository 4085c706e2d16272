"""The attention rule R7 (SCIENCE.md §7) derived on the derivation engine."""
