"""The claims C8–C14 (SCIENCE.md §3) on the derivation engine."""
