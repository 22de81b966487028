"""Registrations for the rgb model family."""
