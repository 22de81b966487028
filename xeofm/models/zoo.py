"""The model zoo: registrations of published EO foundation models."""
