"""Registrations for the prithvi model family."""
