"""System B: in-store customer journeys (layouts, location codes, journey text, models, evaluation)."""
