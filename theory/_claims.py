"""The claims C1–C14 (SCIENCE.md §3): being rewritten on the derivation engine."""
