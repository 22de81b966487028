"""Registrations for the clip model family."""
