"""A small real ML service to heal, and a chaos tool that breaks it for real (docs/serving.md)."""
