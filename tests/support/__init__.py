"""Helpers shared by test packages (one place, imported everywhere)."""
