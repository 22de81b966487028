"""Registrations for the dofa model family."""
