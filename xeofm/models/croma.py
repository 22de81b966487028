"""Registrations for the croma model family."""
