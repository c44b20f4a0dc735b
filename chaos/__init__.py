"""Reproducible failure scenarios against the real daemon, broker and receivers."""
